"""A run's life in the runner, under the lock protocol.

take over the gateway's lease (or re-acquire a lapsed one under a new fence) -> mark the claim
running (fenced) -> run the agent while a keeper extends the lease -> append the outcome under
the lock -> finish the claim (fenced) -> append `lock.released` and release the lock
(compare-and-delete) in one step.
A run that loses its lease stops and records `run.superseded`; its late writes are refused.
A redelivered command whose run already ended, or whose task another run has claimed since,
does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import httpx
import structlog
from openai import AsyncOpenAI
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.commandside.claims import (
    LIVE_STATES,
    ClaimState,
    finish_claim,
    get_claim,
    refresh_claim,
    start_claim,
)
from libs.commandside.locks import Holder, Lease, TaskLocks
from libs.common import Settings
from libs.events import (
    EventStore,
    LockAcquired,
    LockExpired,
    LockLost,
    LockNotHeld,
    LockReleased,
    RetrievalDone,
    RetrievedChunk,
    RunAgent,
    RunCompleted,
    RunFailed,
    RunStarted,
    RunSuperseded,
)
from libs.events.stats import RunStats
from services.runner.agent import ask_model
from services.runner.metrics import RUNS_FINISHED
from services.runner.retrieval import RetrievalFailed, retrieve

__all__ = ["RunDeps", "handle_run"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RunDeps:
    settings: Settings
    store: EventStore
    locks: TaskLocks
    engine: AsyncEngine
    llm: AsyncOpenAI
    http: httpx.AsyncClient
    stats: RunStats
    worker: str


async def handle_run(command: RunAgent, deps: RunDeps) -> None:
    task_id, run_id = command.task_id, command.run_id
    if outcome := await deps.store.run_outcome(task_id, run_id):
        log.info("run.skipped", reason=f"already ended with {outcome}")
        return
    claim = await get_claim(deps.engine, task_id)
    if claim is None or claim.run_id != run_id or claim.state not in LIVE_STATES:
        log.info("run.skipped", reason="the task's claim belongs to another run or has ended")
        return

    ttl_ms = deps.settings.lock_ttl_ms
    got = await deps.locks.take_over(task_id, run_id, command.fence, ttl_ms)
    if isinstance(got, Holder):
        await _superseded(deps, command, command.fence, f"run {got.run_id} holds the task's lock")
        return
    lease = got
    if lease.reacquired:
        expired = LockExpired(
            task_id=task_id,
            run_id=run_id,
            fence=command.fence,
            reason="the lease lapsed before a runner started the run",
        )
        await deps.store.append(expired, lock_token=lease.token)
        acquired = LockAcquired(
            task_id=task_id, run_id=run_id, fence=lease.fence, ttl_ms=ttl_ms, by="runner"
        )
        await deps.store.append(acquired, lock_token=lease.token)
    if not await start_claim(deps.engine, task_id, run_id, lease.fence, _claim_expiry(ttl_ms)):
        await deps.locks.release(lease)
        await _superseded(deps, command, lease.fence, "another run claimed the task")
        return
    await _run_under_lease(command, lease, deps)


def _claim_expiry(ttl_ms: int) -> float:
    return time.time() + ttl_ms / 1000


async def _run_under_lease(command: RunAgent, lease: Lease, deps: RunDeps) -> None:
    started = time.monotonic()
    task_id, run_id, fence = command.task_id, command.run_id, lease.fence
    work = asyncio.create_task(_work(command, lease, deps))
    finished = asyncio.Event()
    keeper = asyncio.create_task(_keep_lease(lease, deps, work, finished))
    lost: str | None = None
    try:
        answer, sources = await work
    except LockNotHeld:
        lost = "the task lock was gone when the run tried to write"
    except asyncio.CancelledError:
        lost = _lost_reason(keeper)
        if lost is None:
            raise  # the runner itself is being cancelled
    except Exception as exc:
        reason = (
            f"retrieval failed: {exc}"
            if isinstance(exc, RetrievalFailed)
            else f"LLM call failed: {type(exc).__name__}: {exc}"
        )
        log.warning("run.failed", reason=reason)
        failed = RunFailed(
            task_id=task_id, run_id=run_id, fence=fence, reason=reason, duration_s=_since(started)
        )
        await _finish(deps, lease, failed)
        return
    finally:
        finished.set()  # stop the keeper by event: a cancel() inside redis-py can be swallowed
        await keeper
    if lost is not None:
        await deps.store.append(LockLost(task_id=task_id, run_id=run_id, fence=fence, reason=lost))
        await _superseded(deps, command, fence, lost)
        return
    duration = _since(started)
    completed = RunCompleted(
        task_id=task_id,
        run_id=run_id,
        fence=fence,
        answer=answer,
        duration_s=duration,
        sources=sources,
    )
    await _finish(deps, lease, completed)
    log.info("run.completed", duration_s=round(duration, 3), answer_chars=len(answer))


def _lost_reason(keeper: asyncio.Task[str | None]) -> str | None:
    """Why the work was cancelled, if the keeper did it (it returns right after)."""
    if keeper.done() and not keeper.cancelled():
        return keeper.result()
    return None


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


async def _keep_lease(
    lease: Lease, deps: RunDeps, work: asyncio.Task[object], finished: asyncio.Event
) -> str | None:
    """Extend the lease every third of its TTL until `finished`; if an extension fails, stop
    the work and say why."""
    interval = lease.ttl_ms / 3000
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), interval)
        if finished.is_set() or work.done():
            return None
        if not await deps.locks.extend(lease):
            reason = "the task lock expired or was taken while the run was working"
            log.warning("run.lease_lost", reason=reason)
            work.cancel()
            return reason
        await refresh_claim(deps.engine, lease.task_id, lease.fence, _claim_expiry(lease.ttl_ms))


async def _finish(deps: RunDeps, lease: Lease, outcome: RunCompleted | RunFailed) -> None:
    try:
        await deps.store.append_outcome(outcome, lock_token=lease.token)
    except LockNotHeld:
        await _superseded(deps, _command_of(outcome), lease.fence, "lock lost before the result")
        return
    state = ClaimState.DONE if isinstance(outcome, RunCompleted) else ClaimState.FAILED
    if not await finish_claim(deps.engine, lease.task_id, lease.fence, state):
        log.warning("run.claim_not_finished", reason="the claim's fence moved on")
    released = LockReleased(task_id=lease.task_id, run_id=lease.run_id, fence=lease.fence)
    try:
        await deps.store.append_release(released, lock_token=lease.token)
    except LockNotHeld:
        log.warning("run.lock_lapsed_before_release")  # nothing left to release
    finished = "completed" if state == ClaimState.DONE else "failed"
    await deps.stats.record(finished, outcome.duration_s)
    RUNS_FINISHED.labels(outcome=finished).inc()


def _command_of(event: RunCompleted | RunFailed) -> RunAgent:
    return RunAgent(task_id=event.task_id, run_id=event.run_id, fence=event.fence, question="")


async def _superseded(deps: RunDeps, command: RunAgent, fence: int, reason: str) -> None:
    log.warning("run.superseded", reason=reason)
    RUNS_FINISHED.labels(outcome="superseded").inc()
    await deps.store.append(
        RunSuperseded(task_id=command.task_id, run_id=command.run_id, fence=fence, reason=reason)
    )
