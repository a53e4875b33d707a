"""`GET /api/tasks/{id}/locks`: the task's lock and conflict history, newest first.

Read from the task's events (the events are the history; no log files): the SQL archive for
whatever Redis trimmed, then the task's stream."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from libs.events import event_to_builtins
from libs.readmodels import get_task
from libs.readmodels.archive import task_history
from services.gateway.context import context_of
from services.gateway.errors import ApiError
from services.gateway.tasks_api import path_task_id
from services.gateway.validation import query_count

__all__ = ["LOCK_HISTORY_TYPES", "read_task_locks"]

LOCK_HISTORY_TYPES = frozenset(
    {
        "lock.acquired",
        "lock.conflict",
        "lock.lost",
        "lock.expired",
        "lock.released",
        "run.superseded",
    }
)


async def read_task_locks(request: Request) -> Response:
    ctx = context_of(request)
    task_id = path_task_id(request)
    limit = query_count(request, "limit", default=200, high=5000)
    if await get_task(ctx.engine, task_id) is None:
        raise ApiError(404, f"task {task_id} does not exist")
    events = await task_history(ctx.store, ctx.engine, task_id, types=LOCK_HISTORY_TYPES)
    history = [
        {"id": stored.stream_id, **event_to_builtins(stored.event)}
        for stored in reversed(events[-limit:])
    ]
    return JSONResponse({"task_id": task_id, "locks": history})
