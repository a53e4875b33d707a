"""`/api/tasks`: create, list and read tasks (reads come from the read models; new ids come
from the command side's durable counter, `libs.commandside.task_ids`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from libs.commandside.task_ids import allocate_task_id
from libs.events import StoredEvent, TaskCreated
from libs.events.ids import is_after
from libs.readmodels import (
    TaskStatus,
    TaskView,
    get_task,
    list_activity,
    list_runs,
    list_tasks,
    project_task,
)
from libs.readmodels.archive import task_history
from libs.readmodels.schema import tasks
from services.gateway.bodies import decode_body
from services.gateway.context import GatewayContext, context_of
from services.gateway.errors import ApiError
from services.gateway.metrics import TASKS_CREATED
from services.gateway.validation import path_id, query_choice, query_count, query_entry_id

__all__ = [
    "create_task",
    "list_all_tasks",
    "read_task",
    "read_task_activity",
    "task_states",
]

TASK_STATUSES = tuple(TaskStatus)


class CreateTask(msgspec.Struct, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    description: Annotated[str, msgspec.Meta(max_length=10_000)] = ""


def task_json(task: TaskView) -> dict[str, object]:
    body: dict[str, object] = msgspec.to_builtins(task)
    body["events_url"] = f"/events/tasks/{task.id}"
    return body


def path_task_id(request: Request) -> int:
    return path_id(request, "task_id", "task id")


async def create_task(request: Request) -> Response:
    ctx = context_of(request)
    body = await decode_body(request, CreateTask, ctx.settings.max_body_bytes)
    if not body.title.strip():
        raise ApiError(422, "title must not be blank")
    task_id = await allocate_task_id(ctx.engine, lambda: ids_handed_out_before(ctx))
    event = TaskCreated(task_id=task_id, title=body.title.strip(), description=body.description)
    appended = await ctx.store.append(event)
    TASKS_CREATED.inc()
    await ctx.wait_projected(appended)
    task = await get_task(ctx.engine, task_id) or TaskView(
        id=task_id,
        title=event.title,
        description=event.description,
        status=TaskStatus.NEW,
        created_at=event.at,
        updated_at=event.at,
    )
    return JSONResponse(task_json(task), status_code=201)


async def ids_handed_out_before(ctx: GatewayContext) -> int:
    """The highest task id handed out before ids came from SQL (asked once per deployment): the
    old Redis counter, or the read models' highest task if that counter is gone."""
    counter = await ctx.redis.get(ctx.keys.task_sequence)
    async with ctx.engine.connect() as conn:
        highest = (await conn.execute(sa.select(sa.func.max(tasks.c.id)))).scalar()
    return max(int(counter or 0), int(highest or 0))


async def list_all_tasks(request: Request) -> Response:
    ctx = context_of(request)
    status = query_choice(request, "status", TASK_STATUSES)
    limit = query_count(request, "limit", default=100, high=1000)
    found = await list_tasks(ctx.engine, status=status, limit=limit)
    return JSONResponse({"tasks": [task_json(task) for task in found]})


async def read_task(request: Request) -> Response:
    ctx = context_of(request)
    task_id = path_task_id(request)
    task = await get_task(ctx.engine, task_id)
    if task is None:
        raise ApiError(404, f"task {task_id} does not exist")
    body = task_json(task)
    body["run_history"] = [msgspec.to_builtins(run) for run in await list_runs(ctx.engine, task_id)]
    return JSONResponse(body)


async def read_task_activity(request: Request) -> Response:
    """The task's Activity timeline, oldest first. `?after=ENTRY_ID` (a task-stream entry id)
    returns only the items after it, for a client that already shows the older ones. Each item
    carries `task`: the task as the projection saw it right after that event, so a client can
    show any point of the timeline without folding events itself."""
    ctx = context_of(request)
    task_id = path_task_id(request)
    after = query_entry_id(request, "after", default="0-0")
    # a task whose first event the projector has not written yet exists, with no items so far
    if await get_task(ctx.engine, task_id) is None and not await ctx.redis.exists(
        ctx.keys.task_events(task_id)
    ):
        raise ApiError(404, f"task {task_id} does not exist")
    items = [i for i in await list_activity(ctx.engine, task_id) if is_after(i.entry_id, after)]
    # read after the items: the stream, with the archive behind it, holds every projected event
    history = await task_history(ctx.store, ctx.engine, task_id) if items else []
    states = task_states(history, [item.entry_id for item in items])
    body = [
        {**msgspec.to_builtins(item), "task": msgspec.to_builtins(state)}
        for item, state in zip(items, states, strict=True)
    ]
    return JSONResponse({"activity": body})


def task_states(history: Sequence[StoredEvent], entry_ids: Sequence[str]) -> list[TaskView | None]:
    """The task right after each of `entry_ids` (ascending task-stream ids), folding the task's
    `history` (oldest first) through the projector's own `project_task`."""
    states: list[TaskView | None] = []
    task: TaskView | None = None
    events = iter(history)
    pending = next(events, None)
    for entry_id in entry_ids:
        while pending is not None and not is_after(pending.stream_id, entry_id):
            task = project_task(task, pending.event)
            pending = next(events, None)
        states.append(task)
    return states
