"""Ending abandoned runs: a run whose claim stayed "queued" past `RAGPOC_QUEUE_TIMEOUT_S` was
never started (its admission was cut short, say by Redis going away or its gateway dying
between `run.requested` and the command, or no runner came in time). Every runner looks for such
claims now and then, and for each one moves the claim to "failed" (fenced, so a runner that
started the run first wins) and ends the run with `run.failed`. Several runners doing it at once
is harmless: the claim moves once, and a run ends exactly once (`append_outcome`)."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from libs.commandside.claims import abandon_claim, expired_queued_claims
from libs.common.backoff import FailureStreak, pause
from libs.events import RunAlreadyEnded, RunFailed
from services.runner.deps import RunDeps
from services.runner.lease import is_transient_error

__all__ = ["reap_abandoned_runs", "reap_until"]

log = structlog.get_logger(__name__)

BATCH = 100


async def reap_abandoned_runs(deps: RunDeps) -> int:
    """End the runs abandoned in the queue now; how many this call ended."""
    timeout_s = deps.settings.queue_timeout_s
    ended = 0
    for claim in await expired_queued_claims(deps.engine, limit=BATCH):
        if not await abandon_claim(deps.engine, claim.task_id, claim.run_id, claim.fence):
            continue  # a runner started it, or another reaper got there first
        failed = RunFailed(
            task_id=claim.task_id,
            run_id=claim.run_id,
            fence=claim.fence,
            reason=f"abandoned: it was not started within RAGPOC_QUEUE_TIMEOUT_S ({timeout_s:g} s)",
        )
        with contextlib.suppress(RunAlreadyEnded):
            await deps.store.append_outcome(failed, lock_token=None)
            ended += 1
            log.warning("run.abandoned", task_id=claim.task_id, run_id=claim.run_id)
    return ended


async def reap_until(deps: RunDeps, stop: asyncio.Event) -> None:
    """Reap every quarter of the queue timeout (1 s to 60 s) until `stop`. A Redis or database
    outage is waited out, an unexpected error is logged and tried again: it never ends the
    runner."""
    interval = min(max(deps.settings.queue_timeout_s / 4, 1.0), 60.0)
    streak = FailureStreak(log, "run.reaper_failed", "run.reaper_recovered")
    while not stop.is_set():
        try:
            await reap_abandoned_runs(deps)
        except Exception as exc:  # never the end of the runner: tried again next time
            if not is_transient_error(exc) and not streak.failing:
                log.error("run.reaper_unexpected_error", exc_info=exc)
            streak.failed(exc, interval)
        else:
            streak.recovered()
        await pause(stop, interval)
