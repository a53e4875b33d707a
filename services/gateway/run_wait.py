"""`POST /run-agents?wait=SECONDS`: follow the task's stream until the run ends, within a bound."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from libs.events import RunCompleted, RunFailed, RunSuperseded
from services.gateway.context import GatewayContext
from services.gateway.errors import ApiError

__all__ = ["RunOutcome", "wait_for_outcome", "wait_seconds"]

RunOutcome = RunCompleted | RunFailed | RunSuperseded
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
    ctx: GatewayContext, task_id: int, run_id: str, after: str, seconds: float
) -> RunOutcome | None:
    """The run's terminal event, or None if it did not end within `seconds`."""
    stream = ctx.keys.task_events(task_id)
    try:
        async with asyncio.timeout(seconds):
            follow = ctx.follower.follow([stream], {stream: after}, block_ms=1000)
            async for item in follow:
                if item is None:
                    continue
                event = item[1].event
                if isinstance(event, RunOutcome) and event.run_id == run_id:
                    return event
    except TimeoutError:
        return None
    return None
