"""Admitting a run: the three layers of duplicate protection, in order, then queueing it.

1. up-front check: a live lock on the task -> refuse at once;
2. the tokenized lock: SET NX PX with a fencing token from INCR -> refuse when taken;
3. the database claim: one conditional UPDATE -> refuse (and release the lock) on zero rows.
Every refusal is a `lock.conflict` event naming the layer; an admission is `lock.acquired`,
then `queue_run` appends `run.requested` and XADDs the command (durably: `DurableAccept`).

From the lock's acquisition until the command is queued, any failure (a lost lock, a failed
XADD, a command Valkey did not confirm on disk, the request cancelled because the gateway is
stopping) undoes the admission before the error goes on, shielded from cancellation: the
claim goes back to "failed" only if it is still this run's, at this fence, and still queued
(a runner that already started the run keeps it), and the lock is released by
compare-and-delete. Without the undo the claim would answer 409 to every request for the task
until RAGPOC_QUEUE_TIMEOUT_S passed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.commandside.claims import LIVE_STATES, cancel_queued_claim, claim_task, get_claim
from libs.commandside.locks import Holder, Lease
from libs.events import (
    Appended,
    LockAcquired,
    LockConflict,
    LockNotHeld,
    LockReleased,
    RunAgent,
    RunAlreadyEnded,
    RunFailed,
    RunRequested,
    encode,
)
from libs.events.lock import ConflictLayer
from services.gateway import sentinels
from services.gateway.context import GatewayContext

__all__ = ["Admitted", "Refused", "admit_run", "finish_undos", "precheck", "queue_run"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# How far an admission got when it failed: what its undo has to take back.
Stage = Literal["locked", "acquired", "requested"]

# Undos in progress, held here so none is garbage-collected while its request is cancelled.
_UNDOING: set[asyncio.Task[Any]] = set()


@dataclass(frozen=True, slots=True)
class Admitted:
    """The run holds the task's lock and its claim: `queue_run` must follow at once (with no
    await in between, so a cancellation cannot land outside the undo's reach)."""

    lease: Lease


@dataclass(frozen=True, slots=True)
class Refused:
    layer: ConflictLayer
    holder_run_id: str
    expires_at: float | None


async def _refuse(
    ctx: GatewayContext, task_id: int, run_id: str, layer: ConflictLayer, holder: Holder | None
) -> Refused:
    refused = Refused(
        layer=layer,
        holder_run_id=holder.run_id if holder else "",
        expires_at=holder.expires_at if holder else None,
    )
    await ctx.store.append(
        LockConflict(
            task_id=task_id,
            run_id=run_id,
            layer=layer,
            holder_run_id=refused.holder_run_id,
            expires_at=refused.expires_at,
        )
    )
    sentinels.lock_conflict(
        ctx.settings.sentinel_dir, task_id, run_id, layer, refused.holder_run_id, refused.expires_at
    )
    return refused


async def precheck(ctx: GatewayContext, task_id: int, run_id: str) -> Refused | None:
    """Layer 1, Redis only: a live lock means the task is taken (and exists)."""
    holder = await ctx.locks.holder(task_id)
    if holder is None:
        return None
    return await _refuse(ctx, task_id, run_id, "precheck", holder)


async def admit_run(ctx: GatewayContext, task_id: int, run_id: str) -> Admitted | Refused:
    """Layers 2 and 3, after `precheck` found the task free."""
    ttl_ms = ctx.settings.lock_ttl_ms
    acquired = await ctx.locks.acquire(task_id, run_id, ttl_ms)
    if isinstance(acquired, Holder):
        return await _refuse(ctx, task_id, run_id, "lock", acquired)
    lease = acquired

    stage: Stage = "locked"
    try:
        claimed = await claim_task(
            ctx.engine, task_id, run_id, lease.fence, ttl_s=ctx.settings.queue_timeout_s
        )
        if claimed:
            await ctx.store.append(
                LockAcquired(
                    task_id=task_id, run_id=run_id, fence=lease.fence, ttl_ms=ttl_ms, by="gateway"
                ),
                lock_token=lease.token,
            )
            stage = "acquired"
            sentinels.lock_acquired(ctx.settings.sentinel_dir, lease)
    except BaseException as exc:
        await _shielded(_undo(ctx, lease, stage, _why(exc)))
        raise
    if claimed:
        return Admitted(lease)

    await _shielded(_release(ctx, lease))
    claim = await get_claim(ctx.engine, task_id)
    claim_holder = (
        Holder(run_id=claim.run_id, fence=claim.fence, expires_at=claim.expires_at)
        if claim
        else None
    )
    return await _refuse(ctx, task_id, run_id, "db", claim_holder)


async def queue_run(
    ctx: GatewayContext, admitted: Admitted, requested: RunRequested, command: RunAgent
) -> Appended:
    """Append `run.requested` under the lock and XADD the command; returns once Valkey has it
    on disk when durable accept is on. Raises what failed (`LockNotHeld`, `NotDurable`, a Redis
    error) after undoing the admission."""
    lease = admitted.lease
    stage: Stage = "acquired"
    try:
        appended = await ctx.store.append(requested, lock_token=lease.token)
        stage = "requested"
        stream = ctx.keys.run_commands_of(command.task_id)
        await ctx.durability.xadd(stream, {"type": "run", "data": encode(command)})
    except BaseException as exc:
        kept = await _shielded(_undo(ctx, lease, stage, _why(exc)))
        if kept and stage == "requested" and isinstance(exc, Exception):
            return appended  # a runner already started the run: it was queued after all
        raise
    return appended


async def finish_undos(timeout_s: float = 5.0) -> None:
    """Wait, `timeout_s` at most, for the undos still running (of requests cancelled while a
    gateway stops). The gateway's lifespan should await it before it closes the Redis and SQL
    clients those undos use; an undo that outlives them reconnects, or lapses by itself."""
    if _UNDOING:
        await asyncio.wait(set(_UNDOING), timeout=timeout_s)


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "the request was cancelled (the gateway stopping?) before the run was queued"
    if isinstance(exc, LockNotHeld):
        return "the task's lock lapsed before the run was queued"
    return f"the run could not be queued: {type(exc).__name__}: {exc}"


async def _shielded(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end even if the request is cancelled (again) while it runs: such a
    cancellation reaches the request at once, and `work` goes on by itself."""
    task = asyncio.ensure_future(work)
    _UNDOING.add(task)
    task.add_done_callback(_UNDOING.discard)
    return await asyncio.shield(task)


async def _undo(ctx: GatewayContext, lease: Lease, stage: Stage, reason: str) -> bool:
    """Take back an admission that did not queue its run, as far as it got (`stage`). True
    when it kept it instead: a runner had already started the run (its command did reach the
    stream). Never raises: what it cannot undo lapses by itself (the lock after its TTL, the
    claim after RAGPOC_QUEUE_TIMEOUT_S)."""
    ids = {"task_id": lease.task_id, "run_id": lease.run_id, "fence": lease.fence}
    try:
        unclaimed = await cancel_queued_claim(ctx.engine, lease.task_id, lease.run_id, lease.fence)
        if not unclaimed and await _started(ctx.engine, lease):
            log.warning("run.admission_kept", reason="a runner already started the run", **ids)
            return True  # a runner took the lock over (under its own token): leave it
        try:
            await _end_and_release(ctx, lease, stage, reason)
        except RedisConnectionError:
            # a stopping gateway closes its Redis client under us: once more, reconnecting
            await _end_and_release(ctx, lease, stage, reason)
        log.warning("run.admission_undone", reason=reason, **ids)
    except Exception as exc:
        log.error("run.admission_undo_failed", reason=reason, error=repr(exc), **ids)
    return False


async def _end_and_release(ctx: GatewayContext, lease: Lease, stage: Stage, reason: str) -> None:
    """The Redis half of the undo (safe to repeat): a requested run ends with `run.failed` and
    its outcome marker (so a runner that gets its command anyway skips it), then the lock is
    released."""
    if stage == "requested" and not await ctx.store.run_outcome(lease.task_id, lease.run_id):
        failed = RunFailed(
            task_id=lease.task_id, run_id=lease.run_id, fence=lease.fence, reason=reason
        )
        try:
            await ctx.store.append_outcome(failed, lock_token=lease.token)
        except LockNotHeld:  # the lock lapsed; the run still ended here, once
            with contextlib.suppress(RunAlreadyEnded):
                await ctx.store.append_outcome(failed, lock_token=None)
        except RunAlreadyEnded:
            pass  # a retry of this undo, or a runner, ended it first
    await _release(ctx, lease, logged=stage != "locked")


async def _started(engine: AsyncEngine, lease: Lease) -> bool:
    """Whether a runner has taken the run over (its claim is this run's and live)."""
    claim = await get_claim(engine, lease.task_id)
    return claim is not None and claim.run_id == lease.run_id and claim.state in LIVE_STATES


async def _release(ctx: GatewayContext, lease: Lease, *, logged: bool = False) -> None:
    """Compare-and-delete the lock; with `logged` (its `lock.acquired` is in the log), append
    `lock.released` in the same step. A lock no longer ours is left alone."""
    if not logged:
        await ctx.locks.release(lease)
        return
    released = LockReleased(task_id=lease.task_id, run_id=lease.run_id, fence=lease.fence)
    with contextlib.suppress(LockNotHeld):  # lapsed or taken: nothing of ours to release
        await ctx.store.append_release(released, lock_token=lease.token)
