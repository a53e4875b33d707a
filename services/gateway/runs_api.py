"""`POST /run-agents`: admit a run (duplicate protection), then queue its command; a retry
with the same `Idempotency-Key` is answered with the run the first request started."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from libs.commandside.idempotency import (
    EarlierRequest,
    IdempotencyRecord,
    checked_idempotency_key,
    request_fingerprint,
)
from libs.events import (
    Appended,
    LockNotHeld,
    RunAgent,
    RunCompleted,
    RunFailed,
    RunRequested,
)
from libs.events.store import last_generated_id
from libs.readmodels import RunStatus, get_task, list_runs
from services.gateway import sentinels
from services.gateway.admission import Refused, admit_run, precheck, queue_run
from services.gateway.bodies import decode_body
from services.gateway.context import GatewayContext, NotDurable, context_of
from services.gateway.errors import ApiError
from services.gateway.metrics import RUNS_ACCEPTED, RUNS_REJECTED, RUNS_REPLAYED, RUNS_REQUESTED
from services.gateway.run_wait import (
    RunOutcome,
    archived_outcome,
    wait_for_outcome,
    wait_seconds,
)
from services.gateway.validation import TaskId

__all__ = ["RunRequest", "run_agents"]


class RunRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: TaskId
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
    sentinels.entered(ctx.settings.sentinel_dir, body.id)
    wait = wait_seconds(request)
    key = checked_idempotency_key(request.headers.get("idempotency-key"))
    if body.hold_seconds and not ctx.settings.dev:
        raise ApiError(422, "hold_seconds is accepted only when the server runs with RAGPOC_DEV=1")
    RUNS_REQUESTED.inc()
    run_id = uuid.uuid4().hex
    if key is None:
        return await answer(ctx, await admit_and_queue(ctx, body, run_id), wait)

    fingerprint = request_fingerprint(body)
    claim = await ctx.idempotency.reserve(body.id, key, fingerprint, run_id)
    if isinstance(claim, EarlierRequest):
        if claim.record.fingerprint != fingerprint:
            raise ApiError(
                422,
                "this Idempotency-Key was already used for a different request to this task; "
                "use a new key for a new request",
            )
        RUNS_REPLAYED.inc()
        return await replay(ctx, body.id, claim.record, wait)
    try:
        queued = await admit_and_queue(ctx, body, run_id)
    except BaseException:
        await asyncio.shield(ctx.idempotency.forget(claim))
        raise
    await ctx.idempotency.confirm(claim, queued.fence)
    return await answer(ctx, queued, wait)


@dataclass(frozen=True, slots=True)
class QueuedRun:
    task_id: int
    run_id: str
    fence: int
    requested: Appended  # where the run's request landed in the log

    def body(self) -> dict[str, object]:
        return {
            "task_id": self.task_id,
            "run_id": self.run_id,
            "fence": self.fence,
            "status": RunStatus.QUEUED,
            "events_url": f"/events/tasks/{self.task_id}",
        }


async def admit_and_queue(ctx: GatewayContext, body: RunRequest, run_id: str) -> QueuedRun:
    """Admit the run (or raise the 409 or 404) and queue its command (503 when it could not
    be queued, or not confirmed on disk: the admission is undone then, the task is free)."""
    refused = await precheck(ctx, body.id, run_id)
    if refused is not None:
        RUNS_REJECTED.labels(layer=refused.layer).inc()
        raise conflict_error(body.id, refused)
    task = await get_task(ctx.engine, body.id)
    if task is None:
        raise ApiError(404, f"task {body.id} does not exist: create it with POST /api/tasks")

    question = body.query or f"{body.title or task.title}\n\n{task.description}".strip()
    try:
        outcome = await admit_run(ctx, task.id, run_id)
        if isinstance(outcome, Refused):
            RUNS_REJECTED.labels(layer=outcome.layer).inc()
            raise conflict_error(task.id, outcome)
        fence = outcome.lease.fence
        requested = RunRequested(task_id=task.id, run_id=run_id, fence=fence, query=question)
        command = RunAgent(
            task_id=task.id,
            run_id=run_id,
            fence=fence,
            question=question,
            hold_seconds=body.hold_seconds,
        )
        appended = await queue_run(ctx, outcome, requested, command)
    except LockNotHeld as exc:
        raise ApiError(409, "the task's lock lapsed before the run was queued; try again") from exc
    except (NotDurable, RedisError) as exc:
        raise ApiError(
            503, f"the run could not be queued ({exc}); nothing was started, try again"
        ) from exc
    RUNS_ACCEPTED.inc()
    return QueuedRun(task.id, run_id, fence, appended)


async def answer(ctx: GatewayContext, queued: QueuedRun, wait: float | None) -> Response:
    """202 once the client can read its own write; with ?wait, 200 and the outcome if the run
    ended within the wait."""
    accepted = queued.body()
    if wait is not None:
        ended = await wait_for_outcome(ctx, queued.task_id, queued.requested, queued.run_id, wait)
        if ended is not None:
            return JSONResponse(accepted | outcome_json(ended), status_code=200)
        accepted["message"] = f"the run did not end within {wait:g} s; follow events_url"
    await ctx.wait_projected(queued.requested)
    return JSONResponse(accepted, status_code=202)


async def replay(
    ctx: GatewayContext, task_id: int, earlier: IdempotencyRecord, wait: float | None
) -> Response:
    """Answer a retry with the run its first request started, as that run stands now."""
    if not earlier.fence:
        raise ApiError(
            409,
            "a request with this Idempotency-Key is still being admitted; retry shortly",
            task_id=task_id,
            run_id=earlier.run_id,
        )
    partition = ctx.keys.partition_of(task_id)
    # Where the log ends before the run is read: an outcome after this point is followed below.
    since = Appended(
        "", await last_generated_id(ctx.redis, ctx.keys.partition_log(partition)), partition
    )
    run = next(
        (r for r in await list_runs(ctx.engine, task_id) if r.run_id == earlier.run_id), None
    )
    replayed: dict[str, object] = {
        "task_id": task_id,
        "run_id": earlier.run_id,
        "fence": earlier.fence,
        "status": run.status if run else RunStatus.QUEUED,
        "events_url": f"/events/tasks/{task_id}",
        "replayed": True,
    }
    if wait is None:
        return JSONResponse(replayed, status_code=202)
    ended = None
    if run is not None and run.status.is_terminal:
        ended = await archived_outcome(ctx, task_id, earlier.run_id)
    if ended is None:
        ended = await wait_for_outcome(ctx, task_id, since, earlier.run_id, wait)
    if ended is None:
        replayed["message"] = f"the run did not end within {wait:g} s; follow events_url"
        return JSONResponse(replayed, status_code=202)
    return JSONResponse(replayed | outcome_json(ended), status_code=200)


def outcome_json(outcome: RunOutcome) -> dict[str, object]:
    if isinstance(outcome, RunCompleted):
        return {
            "status": RunStatus.DONE,
            "answer": outcome.answer,
            "sources": msgspec.to_builtins(outcome.sources),
            "duration_s": outcome.duration_s,
        }
    status = RunStatus.FAILED if isinstance(outcome, RunFailed) else RunStatus.SUPERSEDED
    return {"status": status, "error": outcome.reason}
