"""A run's life in the runner, under the lock protocol.

1. Skip a command whose run already ended (its outcome marker) or whose task's claim belongs
   to another run or has ended: a redelivery is harmless.
2. Take the lease (`TaskLocks.take_over`): adopt the admission's reservation at the command's
   fence, or re-acquire a lapsed lease under a new fence (`lock.expired`, then `lock.acquired`
   by "runner"); the token always names this runner, with a nonce of its own. A lock held by
   anyone else is never taken: when another holder of this run has it (a stalled runner whose
   command was reclaimed), or another run's admission holds it while this run's claim stands,
   `RunHeldElsewhere` leaves the command pending, to be retried once the lease has lapsed.
   When another run holds the task for good, this run is reported superseded (`reports`).
3. Move the claim to "running" (fenced: still this run's, at this fence or an older one).
4. Work under the lease (`lease.run_guarded`): the keeper extends it every ttl/3, riding out
   transient Redis and database errors, and raises `LeaseLost` (cancelling the work) once it is
   gone. Every event is appended under the token, so a late write is refused (`LockNotHeld`).
5. Append the outcome with its marker under the token, finish the claim (fenced), then append
   `lock.released` and release the lock (compare-and-delete) in one step.

A run that lost its lease stops writing and does not crash: its `lock.lost` and
`run.superseded` go through the fenced report (`reports.write_report`), which drops them when a
newer holder of the run, or its outcome, says otherwise.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Coroutine
from typing import Any

import structlog
from redis.exceptions import RedisError

from libs.commandside.claims import (
    LIVE_STATES,
    ClaimState,
    finish_claim,
    get_claim,
    refresh_claim,
    start_claim,
)
from libs.commandside.errors import CommandSideError
from libs.commandside.locks import Holder, Lease
from libs.common.backoff import Backoff
from libs.events import (
    LockAcquired,
    LockExpired,
    LockLost,
    LockNotHeld,
    LockReleased,
    RetrievalDone,
    RetrievedChunk,
    RunAgent,
    RunAlreadyEnded,
    RunCompleted,
    RunFailed,
    RunStarted,
    RunSuperseded,
)
from services.runner.agent import ask_model
from services.runner.deps import RunDeps
from services.runner.lease import LeaseLost, is_transient_error, keep_lease, run_guarded
from services.runner.metrics import RUNS_FINISHED
from services.runner.reports import write_report
from services.runner.retrieval import RetrievalFailed, retrieve

__all__ = ["RunDeps", "RunHeldElsewhere", "handle_run"]

log = structlog.get_logger(__name__)

SETTLE_S = 1.0  # how long a start waits for another run's passing hold on the lock to end


class RunHeldElsewhere(CommandSideError):
    """The task's lock is held by another holder of this run, or by another run's admission
    while this run's claim stands: the command stays pending and is retried later."""


async def handle_run(command: RunAgent, deps: RunDeps) -> None:
    task_id, run_id = command.task_id, command.run_id
    if outcome := await deps.store.run_outcome(task_id, run_id):
        log.info("run.skipped", reason=f"already ended with {outcome}")
        return
    claim = await get_claim(deps.engine, task_id)
    if claim is None or claim.run_id != run_id or claim.state not in LIVE_STATES:
        if claim is None:
            reason = "the task has no claim for this run"
        elif claim.run_id != run_id:
            reason = f"run {claim.run_id} claimed the task after this run's lease lapsed"
        else:
            reason = f"the run's claim ended ({claim.state}) before it could start"
        log.info("run.skipped", reason=reason)
        await _report_ended(command, deps, reason)  # it never got its outcome: it gets one
        return

    ttl_ms = deps.settings.lock_ttl_ms
    got, sent = await _take_lease(command, deps)
    if got is None:
        log.info("run.skipped", reason="the run ended meanwhile")
        return
    if isinstance(got, Holder):
        await _held_elsewhere(command, got, deps)
        return
    lease = got
    if lease.reacquired:
        expired = LockExpired(
            task_id=task_id,
            run_id=run_id,
            fence=lease.previous_fence,
            reason="the run's lease lapsed before this runner took the run over",
        )
        await deps.store.append(expired, lock_token=lease.token)
        acquired = LockAcquired(
            task_id=task_id, run_id=run_id, fence=lease.fence, ttl_ms=ttl_ms, by="runner"
        )
        await deps.store.append(acquired, lock_token=lease.token)
    if not await start_claim(deps.engine, task_id, run_id, lease.fence, ttl_ms / 1000):
        reason = "its claim was taken by another run, or abandoned past the queue timeout"
        await _superseded(deps, lease, reason, lost=False)
        return
    await _run_under_lease(command, lease, deps, confirmed_at=sent)


async def _take_lease(command: RunAgent, deps: RunDeps) -> tuple[Lease | Holder | None, float]:
    """`take_over`, and when another run holds the lock while this run's claim stands (its
    admission about to be refused at the database, or a report being written), again a few
    times for up to SETTLE_S; with the monotonic time the request that won was sent."""
    backoff = Backoff(base_s=0.05, cap_s=0.4, jitter=False)
    settle_by = time.monotonic() + SETTLE_S
    while True:
        sent = time.monotonic()
        got = await deps.locks.take_over(
            command.task_id,
            command.run_id,
            command.fence,
            deps.settings.lock_ttl_ms,
            holder=deps.worker,
        )
        if not isinstance(got, Holder) or got.run_id == command.run_id or sent > settle_by:
            return got, sent
        claim = await get_claim(deps.engine, command.task_id)
        if claim is None or claim.run_id != command.run_id or claim.state not in LIVE_STATES:
            return got, sent
        await asyncio.sleep(backoff.next_delay())


async def _held_elsewhere(command: RunAgent, holder: Holder, deps: RunDeps) -> None:
    """The lock is someone else's: wait for it (raise) unless this run can never start again."""
    if holder.run_id == command.run_id:
        raise RunHeldElsewhere(
            f"another holder of this run ({holder.holder or 'unnamed'}, fence {holder.fence}) "
            "has its lease; the command is retried once that lease has lapsed"
        )
    claim = await get_claim(deps.engine, command.task_id)
    if claim is not None and claim.run_id == command.run_id and claim.state in LIVE_STATES:
        raise RunHeldElsewhere(f"run {holder.run_id} holds the task's lock for the moment")
    await _report_ended(command, deps, f"run {holder.run_id} holds the task's lock")


async def _report_ended(command: RunAgent, deps: RunDeps, reason: str) -> None:
    """Report a run that can never start again superseded, at the newest fence it took
    (fenced: see `reports`)."""
    if await write_report(
        deps,
        command.task_id,
        command.run_id,
        fence=None,
        fallback_fence=command.fence,
        build=functools.partial(_superseded_events, command.task_id, command.run_id, reason, None),
    ):
        _count_superseded(reason)


async def _run_under_lease(
    command: RunAgent, lease: Lease, deps: RunDeps, *, confirmed_at: float
) -> None:
    started = time.monotonic()
    ttl_s = lease.ttl_ms / 1000

    def keeper(stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        return keep_lease(
            functools.partial(deps.locks.extend, lease),
            functools.partial(refresh_claim, deps.engine, lease.task_id, lease.fence, ttl_s),
            ttl_s=ttl_s,
            confirmed_at=confirmed_at,
            stop=stop,
        )

    try:
        answer, sources = await run_guarded(_work(command, lease, deps), keeper)
    except LeaseLost as lost:
        await _superseded(deps, lease, lost.reason, lost=True)
        return
    except LockNotHeld:
        await _superseded(deps, lease, "the task lock was gone when the run tried to write")
        return
    except Exception as exc:
        reason = _failure_reason(exc)
        log.warning("run.failed", reason=reason)
        failed = RunFailed(
            task_id=lease.task_id,
            run_id=lease.run_id,
            fence=lease.fence,
            reason=reason,
            duration_s=_since(started),
        )
        await _finish(deps, lease, failed)
        return
    duration = _since(started)
    completed = RunCompleted(
        task_id=lease.task_id,
        run_id=lease.run_id,
        fence=lease.fence,
        answer=answer,
        duration_s=duration,
        sources=sources,
    )
    await _finish(deps, lease, completed)
    log.info("run.completed", duration_s=round(duration, 3), answer_chars=len(answer))


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, RetrievalFailed):
        return f"retrieval failed: {exc}"
    if isinstance(exc, RedisError):
        return f"the event store failed mid-run: {type(exc).__name__}: {exc}"
    return f"LLM call failed: {type(exc).__name__}: {exc}"


def _since(started: float) -> float:
    return time.monotonic() - started


async def _work(command: RunAgent, lease: Lease, deps: RunDeps) -> tuple[str, list[RetrievedChunk]]:
    ids = {"task_id": command.task_id, "run_id": command.run_id, "fence": lease.fence}
    started = RunStarted(**ids, worker=deps.worker)  # type: ignore[arg-type]
    await deps.store.append(started, lock_token=lease.token)
    hold = deps.settings.test_hold_seconds or (command.hold_seconds if deps.settings.dev else 0)
    if hold > 0:
        await asyncio.sleep(hold)
    began = time.monotonic()
    context = await retrieve(
        deps.http, deps.settings.ingestor_url, command.question, deps.settings.retrieval_k
    )
    retrieved = RetrievalDone(
        **ids,  # type: ignore[arg-type]
        query=command.question,
        chunks=context,
        duration_s=_since(began),
    )
    await deps.store.append(retrieved, lock_token=lease.token)
    answer = await ask_model(
        command, lease, context, store=deps.store, llm=deps.llm, settings=deps.settings
    )
    return answer, context


async def _finish(deps: RunDeps, lease: Lease, outcome: RunCompleted | RunFailed) -> None:
    try:
        await _append_outcome(deps, lease, outcome)
    except LockNotHeld:
        await _superseded(deps, lease, "the task lock was gone before the result was written")
        return
    except RunAlreadyEnded as ended:  # an earlier try of ours landed, its reply was lost
        log.info("run.outcome_already_written", outcome=str(ended))
    state = ClaimState.DONE if isinstance(outcome, RunCompleted) else ClaimState.FAILED
    if not await finish_claim(deps.engine, lease.task_id, lease.fence, state):
        log.warning("run.claim_not_finished", reason="the claim's fence moved on")
    released = LockReleased(task_id=lease.task_id, run_id=lease.run_id, fence=lease.fence)
    try:
        await deps.store.append_release(released, lock_token=lease.token)
    except LockNotHeld:
        log.warning("run.lock_lapsed_before_release")  # nothing left to release
    finished = "completed" if state == ClaimState.DONE else "failed"
    await deps.stats.record(finished, outcome.duration_s, task_id=lease.task_id)
    RUNS_FINISHED.labels(outcome=finished).inc()


async def _append_outcome(deps: RunDeps, lease: Lease, outcome: RunCompleted | RunFailed) -> None:
    """Append the outcome under the lease, retrying a transient Redis error for up to a lock
    TTL (the append refuses a second terminal event, so a retry after a lost reply is safe).
    Still failing, it raises: the command is delivered again and the run taken over."""
    deadline = time.monotonic() + lease.ttl_ms / 1000
    backoff = Backoff(base_s=0.05, cap_s=max(lease.ttl_ms / 10_000, 0.05), jitter=False)
    while True:
        try:
            await deps.store.append_outcome(outcome, lock_token=lease.token)
            return
        except Exception as exc:
            if not is_transient_error(exc) or time.monotonic() >= deadline:
                raise
            log.warning("run.outcome_retried", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(backoff.next_delay())


async def _superseded(deps: RunDeps, lease: Lease, reason: str, *, lost: bool = True) -> None:
    """Report the run superseded at its lease's fence (with `lock.lost` first when it lost the
    lease), fenced: see `reports`."""
    build = functools.partial(
        _superseded_events, lease.task_id, lease.run_id, reason, reason if lost else None
    )
    if await write_report(
        deps,
        lease.task_id,
        lease.run_id,
        fence=lease.fence,
        fallback_fence=lease.fence,
        build=build,
        own_token=lease.token,
    ):
        _count_superseded(reason)


def _superseded_events(
    task_id: int, run_id: str, reason: str, lost: str | None, fence: int
) -> list[LockLost | RunSuperseded]:
    ids = {"task_id": task_id, "run_id": run_id, "fence": fence}
    superseded = RunSuperseded(**ids, reason=reason)  # type: ignore[arg-type]
    if lost is None:
        return [superseded]
    return [LockLost(**ids, reason=lost), superseded]  # type: ignore[arg-type]


def _count_superseded(reason: str) -> None:
    log.warning("run.superseded", reason=reason)
    RUNS_FINISHED.labels(outcome="superseded").inc()
