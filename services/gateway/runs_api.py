"""`POST /run-agents`: turn a request into a `run.requested` event and a run command."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from libs.events import RunAgent, RunRequested, encode
from libs.readmodels import get_task
from services.gateway.bodies import decode_body
from services.gateway.context import context_of
from services.gateway.errors import ApiError
from services.gateway.metrics import RUNS_REQUESTED

__all__ = ["run_agents"]


class RunRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[int, msgspec.Meta(ge=1)]
    title: Annotated[str, msgspec.Meta(max_length=200)] = ""
    query: Annotated[str, msgspec.Meta(max_length=4_000)] = ""


async def run_agents(request: Request) -> Response:
    ctx = context_of(request)
    body = await decode_body(request, RunRequest, ctx.settings.max_body_bytes)
    RUNS_REQUESTED.inc()
    task = await get_task(ctx.engine, body.id)
    if task is None:
        raise ApiError(404, f"task {body.id} does not exist: create it with POST /api/tasks")
    run_id = uuid.uuid4().hex
    question = body.query or f"{body.title or task.title}\n\n{task.description}".strip()
    appended = await ctx.store.append(RunRequested(task_id=task.id, run_id=run_id, query=question))
    command = RunAgent(task_id=task.id, run_id=run_id, question=question)
    await ctx.redis.xadd(ctx.keys.run_commands, {"type": "run", "data": encode(command)})
    await ctx.wait_projected(appended)
    return JSONResponse(
        {
            "task_id": task.id,
            "run_id": run_id,
            "status": "queued",
            "events_url": f"/events/tasks/{task.id}",
        },
        status_code=202,
    )
