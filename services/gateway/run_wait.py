"""`POST /run-agents?wait=SECONDS`: follow the task's stream until the run ends, within a bound."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from libs.events import Appended, LockReleased, RunCompleted, RunFailed, RunSuperseded
from libs.readmodels import archived_task_events
from services.gateway.context import GatewayContext
from services.gateway.errors import ApiError

__all__ = [
    "RunOutcome",
    "archived_outcome",
    "wait_for_outcome",
    "wait_seconds",
]

RunOutcome = RunCompleted | RunFailed | RunSuperseded
OUTCOME_TYPES = frozenset({"run.completed", "run.failed", "run.superseded"})
MAX_WAIT_SECONDS = 300.0
RELEASE_GRACE_S = 5.0


def wait_seconds(request: Request) -> float | None:
    raw = request.query_params.get("wait")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_WAIT_SECONDS:
        raise ApiError(422, f"wait must be a number of seconds in (0, {MAX_WAIT_SECONDS:g}]")
    return seconds


async def wait_for_outcome(
    ctx: GatewayContext, requested: Appended, run_id: str, seconds: float
) -> RunOutcome | None:
    """The run's terminal event, or None if it did not end within `seconds`. Follows the
    partition log from the run's request on. After a completed or failed outcome it follows on
    (within the wait, and RELEASE_GRACE_S at most) to the run's `lock.released`, so a client
    told the run ended can start the next one at once; then it waits for the projector to pass
    what it saw, so the caller reads its own write."""
    log = ctx.keys.partition_log(requested.partition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    outcome: RunOutcome | None = None
    seen = requested
    try:
        async with asyncio.timeout_at(deadline) as scope:
            follow = ctx.follower.follow([log], {log: requested.log_id}, block_ms=1000)
            async for item in follow:
                if item is None or getattr(item[1].event, "run_id", None) != run_id:
                    continue
                event = item[1].event
                if isinstance(event, RunOutcome):
                    outcome = event
                    seen = Appended(item[1].stream_id, item[1].entry_id, requested.partition)
                    if isinstance(event, RunSuperseded):
                        break  # the task's lock belongs to the newer run
                    scope.reschedule(min(deadline, loop.time() + RELEASE_GRACE_S))
                elif isinstance(event, LockReleased) and outcome is not None:
                    seen = Appended(item[1].stream_id, item[1].entry_id, requested.partition)
                    break
    except TimeoutError:
        if outcome is None:
            return None
    await ctx.wait_projected(seen)
    return outcome


async def archived_outcome(ctx: GatewayContext, task_id: int, run_id: str) -> RunOutcome | None:
    """A projected run's terminal event, from the archive (it holds every projected event)."""
    outcomes = await archived_task_events(ctx.engine, task_id, types=OUTCOME_TYPES)
    for stored in reversed(outcomes):
        if isinstance(stored.event, RunOutcome) and stored.event.run_id == run_id:
            return stored.event
    return None
