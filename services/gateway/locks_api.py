"""`GET /api/tasks/{id}/locks`: the task's lock and conflict history, newest first.

Read straight from the task's stream (the events are the history; no log files)."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from libs.events import decode_event, event_to_builtins
from libs.events.store import Entries
from libs.readmodels import get_task
from services.gateway.context import context_of
from services.gateway.errors import ApiError
from services.gateway.tasks_api import path_task_id

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
PAGE = 500


async def read_task_locks(request: Request) -> Response:
    ctx = context_of(request)
    task_id = path_task_id(request)
    limit_raw = request.query_params.get("limit", "200")
    if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 5000:
        raise ApiError(422, "limit must be an integer from 1 to 5000")
    limit = int(limit_raw)
    if await get_task(ctx.engine, task_id) is None:
        raise ApiError(404, f"task {task_id} does not exist")
    stream = ctx.keys.task_events(task_id)
    history: list[dict[str, object]] = []
    upper = "+"
    while len(history) < limit:
        entries = cast(Entries, await ctx.redis.xrevrange(stream, upper, "-", count=PAGE))
        for entry_id, fields in entries:
            if fields.get("type") in LOCK_HISTORY_TYPES:
                item = event_to_builtins(decode_event(fields["data"]))
                history.append({"id": entry_id, **item})
                if len(history) == limit:
                    break
        if len(entries) < PAGE:
            break
        upper = f"({entries[-1][0]}"
    return JSONResponse({"task_id": task_id, "locks": history})
