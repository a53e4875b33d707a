"""Fenced reports that a run ended without an answer: `lock.lost` and `run.superseded` from a
runner that lost its lease or found its task taken, `run.failed` from the dead-letter path.

A report about run R at fence F (None: at the newest fence R took) is written only while the
reporter still speaks for R at F, so a stale delivery can never end a live run:

1. one Redis step (`TaskLocks.seize_for_report`) checks that R has no outcome yet and that no
   acquisition of R took a fence newer than F; the lock must then be the reporter's own lease
   ("held"), or be free or R's admission reservation at F that no runner took, in which case a
   token of the reporter at F takes it for the report ("seized");
2. the events are appended under that token (the last, terminal one together with R's outcome
   marker, so a later delivery of R skips it), the claim is failed where it is still R's at F or
   an older fence (`fail_claim_of_run`), and the lock the report was written under is released;
3. another run holding the lock ("other") means R holds nothing and cannot write; once the claim
   is no longer R's either, R can never start again, and the report is appended without a token.
   While the claim is still R's, that other run's admission is about to be refused at the
   database: asked again shortly.

Everything else is logged and dropped: R has ended, a newer holder of R speaks for it, or a live
holder of R ("busy") will report for itself. A transient Redis or database error, or a lock that
lapsed while the report was being written, is retried (from step 1) for up to a lock TTL; a report
that still cannot be written raises `ReportNotWritten`, so the command stays pending and its next
delivery decides again: a run never ends without its terminal event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog

from libs.commandside.claims import LIVE_STATES, fail_claim_of_run, get_claim
from libs.commandside.locks import ReportSlot
from libs.common.backoff import Backoff
from libs.common.errors import RagpocError
from libs.events import LockNotHeld, RunAlreadyEnded
from libs.events.codec import AnyEvent
from services.runner.deps import RunDeps
from services.runner.lease import is_transient_error

__all__ = ["ReportNotWritten", "write_report"]

log = structlog.get_logger(__name__)

# The report's events at the fence it is written at; the last one is the terminal event.
BuildReport = Callable[[int], Sequence[AnyEvent]]


class _TryAgain(Exception):
    """The report cannot be decided yet (another run's admission holds the lock), or the lock
    it was being written under lapsed: decide again."""


class ReportNotWritten(RagpocError):
    """A report could not be written within a lock TTL (Redis or the database away)."""


async def write_report(
    deps: RunDeps,
    task_id: int,
    run_id: str,
    *,
    fence: int | None,
    fallback_fence: int,
    build: BuildReport,
    own_token: str = "",
) -> bool:
    """Write the report `build` makes, if the fence check lets it (see the module); whether it
    was written. `own_token`: the reporter's lease, if it may still hold it."""
    budget_s = deps.settings.lock_ttl_ms / 1000
    deadline = time.monotonic() + budget_s
    backoff = Backoff(base_s=0.05, cap_s=max(budget_s / 10, 0.05), jitter=False)
    token = own_token
    while True:
        try:
            slot = await deps.locks.seize_for_report(
                task_id,
                run_id,
                fence=fence,
                fallback_fence=fallback_fence,
                holder=deps.worker,
                ttl_ms=deps.settings.lock_ttl_ms,
                own_token=token,
            )
            if slot.writable:
                token = slot.token  # a retry finds it "held"
            return await _write(deps, task_id, run_id, slot, build)
        except Exception as exc:
            if not (isinstance(exc, _TryAgain) or is_transient_error(exc)):
                raise
            if time.monotonic() >= deadline:
                log.error("run.report_deferred", run_id=run_id, reason=str(exc))
                if token != own_token:  # seized, and not let go: it lapses within a TTL
                    await _let_go(deps, task_id, token)
                raise ReportNotWritten(
                    f"the report on run {run_id} was not written: {exc}"
                ) from exc
            await asyncio.sleep(backoff.next_delay())


async def _let_go(deps: RunDeps, task_id: int, token: str) -> None:
    try:
        await deps.locks.release_token(task_id, token)
    except Exception as exc:
        if not is_transient_error(exc):
            raise


async def _write(
    deps: RunDeps,
    task_id: int,
    run_id: str,
    slot: ReportSlot,
    build: BuildReport,
) -> bool:
    """Write the report as `slot` allows; a written report lets go of the lock it was written
    under (the reporter's lease or the seized one): the run is over."""
    if slot.state == "other":
        claim = await get_claim(deps.engine, task_id)
        if claim is not None and claim.run_id == run_id and claim.state in LIVE_STATES:
            raise _TryAgain(f"{slot.token} holds the lock while this run's claim stands")
        *events, final = build(slot.fence)
        try:
            for event in events:
                await deps.store.append(event)
            await deps.store.append_outcome(final, lock_token=None)
        except RunAlreadyEnded:
            log.info("run.report_dropped", run_id=run_id, why="the run has already ended")
            return False
        return True
    if not slot.writable:
        log.warning("run.report_dropped", run_id=run_id, fence=slot.fence, why=_why(slot))
        return False
    *events, final = build(slot.fence)
    try:
        for event in events:
            await deps.store.append(event, lock_token=slot.token)
        await deps.store.append_outcome(final, lock_token=slot.token)
    except LockNotHeld as exc:
        raise _TryAgain("the lock lapsed while the report was being written") from exc
    except RunAlreadyEnded:
        log.info("run.report_dropped", run_id=run_id, why="the run has already ended")
        await deps.locks.release_token(task_id, slot.token)
        return False
    if not await fail_claim_of_run(deps.engine, task_id, run_id, slot.fence):
        log.info("run.report_claim_kept", run_id=run_id, why="the claim had moved on")
    await deps.locks.release_token(task_id, slot.token)
    return True


def _why(slot: ReportSlot) -> str:
    match slot.state:
        case "ended":
            return "the run has already ended"
        case "newer":
            return f"a later holder of the run took fence {slot.fence}"
        case _:
            return f"another holder of the run ({slot.token}) has the lock and reports itself"
