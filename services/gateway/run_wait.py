"""`POST /run-agents?wait=SECONDS`: follow the task's stream until the run ends, within a bound."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from libs.events import Appended, RunCompleted, RunFailed, RunSuperseded
from libs.events.store import last_generated_id
from libs.readmodels import archived_task_events
from services.gateway.context import GatewayContext
from services.gateway.errors import ApiError

__all__ = [
    "TERMINAL_STATUSES",
    "RunOutcome",
    "archived_outcome",
    "log_tail",
    "wait_for_outcome",
    "wait_seconds",
]

RunOutcome = RunCompleted | RunFailed | RunSuperseded
TERMINAL_STATUSES = frozenset({"done", "failed", "superseded"})
OUTCOME_TYPES = frozenset({"run.completed", "run.failed", "run.superseded"})
MAX_WAIT_SECONDS = 300.0


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
    partition log (from the run's request on) so that, once the outcome is found, the caller
    can wait for the projector to pass it too and read its own write."""
    log = ctx.keys.partition_log(requested.partition)
    try:
        async with asyncio.timeout(seconds):
            follow = ctx.follower.follow([log], {log: requested.log_id}, block_ms=1000)
            async for item in follow:
                if item is None:
                    continue
                event = item[1].event
                if isinstance(event, RunOutcome) and event.run_id == run_id:
                    position = Appended(item[1].stream_id, item[1].entry_id, requested.partition)
                    await ctx.wait_projected(position)
                    return event
    except TimeoutError:
        return None
    return None


async def log_tail(ctx: GatewayContext, partition: int) -> str:
    """The id of the partition log's newest entry ever (kept by Redis even after trimming)."""
    return await last_generated_id(ctx.redis, ctx.keys.partition_log(partition))


async def archived_outcome(ctx: GatewayContext, task_id: int, run_id: str) -> RunOutcome | None:
    """A projected run's terminal event, from the archive (it holds every projected event)."""
    outcomes = await archived_task_events(ctx.engine, task_id, types=OUTCOME_TYPES)
    for stored in reversed(outcomes):
        if isinstance(stored.event, RunOutcome) and stored.event.run_id == run_id:
            return stored.event
    return None
