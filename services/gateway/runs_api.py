"""`POST /run-agents`: admit a run (duplicate protection), then queue its command."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from libs.events import LockNotHeld, RunAgent, RunCompleted, RunFailed, RunRequested, encode
from libs.readmodels import get_task
from services.gateway.admission import Refused, admit_run, precheck
from services.gateway.bodies import decode_body
from services.gateway.context import context_of
from services.gateway.errors import ApiError
from services.gateway.metrics import RUNS_ACCEPTED, RUNS_REJECTED, RUNS_REQUESTED
from services.gateway.run_wait import RunOutcome, wait_for_outcome, wait_seconds

__all__ = ["RunRequest", "run_agents"]


class RunRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[int, msgspec.Meta(ge=1)]
    title: Annotated[str, msgspec.Meta(max_length=200)] = ""
    query: Annotated[str, msgspec.Meta(max_length=4_000)] = ""
    hold_seconds: Annotated[float, msgspec.Meta(ge=0, le=600)] = 0.0


def conflict_error(task_id: int, refused: Refused) -> ApiError:
    until = (
        datetime.fromtimestamp(refused.expires_at, UTC).isoformat(timespec="milliseconds")
        if refused.expires_at is not None
        else None
    )
    holder = refused.holder_run_id or "another run"
    return ApiError(
        409,
        f"task {task_id} is already being run by {holder}"
        + (f" (its lock expires at {until})" if until else "")
        + "; try again when it has finished",
        task_id=task_id,
        holder_run_id=refused.holder_run_id,
        expires_at=refused.expires_at,
        expires_at_iso=until,
        layer=refused.layer,
    )


async def run_agents(request: Request) -> Response:
    ctx = context_of(request)
    body = await decode_body(request, RunRequest, ctx.settings.max_body_bytes)
    wait = wait_seconds(request)
    if body.hold_seconds and not ctx.settings.dev:
        raise ApiError(422, "hold_seconds is accepted only when the server runs with RAGPOC_DEV=1")
    RUNS_REQUESTED.inc()
    run_id = uuid.uuid4().hex
    refused = await precheck(ctx, body.id, run_id)
    if refused is not None:
        RUNS_REJECTED.labels(layer=refused.layer).inc()
        raise conflict_error(body.id, refused)
    task = await get_task(ctx.engine, body.id)
    if task is None:
        raise ApiError(404, f"task {body.id} does not exist: create it with POST /api/tasks")

    outcome = await admit_run(ctx, task.id, run_id)
    if isinstance(outcome, Refused):
        RUNS_REJECTED.labels(layer=outcome.layer).inc()
        raise conflict_error(task.id, outcome)
    lease = outcome.lease

    question = body.query or f"{body.title or task.title}\n\n{task.description}".strip()
    requested = RunRequested(task_id=task.id, run_id=run_id, fence=lease.fence, query=question)
    try:
        appended = await ctx.store.append(requested, lock_token=lease.token)
    except LockNotHeld as exc:
        raise ApiError(409, "the task's lock lapsed before the run was queued; try again") from exc
    command = RunAgent(
        task_id=task.id,
        run_id=run_id,
        fence=lease.fence,
        question=question,
        hold_seconds=body.hold_seconds,
    )
    await ctx.redis.xadd(ctx.keys.run_commands, {"type": "run", "data": encode(command)})
    RUNS_ACCEPTED.inc()
    accepted = {
        "task_id": task.id,
        "run_id": run_id,
        "fence": lease.fence,
        "status": "queued",
        "events_url": f"/events/tasks/{task.id}",
    }
    if wait is not None:
        ended = await wait_for_outcome(ctx, appended, run_id, wait)
        if ended is not None:
            return JSONResponse(accepted | outcome_json(ended), status_code=200)
        accepted["message"] = f"the run did not end within {wait:g} s; follow events_url"
    await ctx.wait_projected(appended)
    return JSONResponse(accepted, status_code=202)


def outcome_json(outcome: RunOutcome) -> dict[str, object]:
    if isinstance(outcome, RunCompleted):
        return {
            "status": "done",
            "answer": outcome.answer,
            "sources": msgspec.to_builtins(outcome.sources),
            "duration_s": outcome.duration_s,
        }
    status = "failed" if isinstance(outcome, RunFailed) else "superseded"
    return {"status": status, "error": outcome.reason}
