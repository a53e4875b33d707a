"""Admitting a run: the three layers of duplicate protection, in order.

1. up-front check: a live lock on the task -> refuse at once;
2. the tokenized lock: SET NX PX with a fencing token from INCR -> refuse when taken;
3. the database claim: one conditional UPDATE -> refuse (and release the lock) on zero rows.
Every refusal is a `lock.conflict` event naming the layer; an admission is `lock.acquired`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from libs.commandside.claims import claim_task, get_claim
from libs.commandside.locks import Holder, Lease
from libs.events import LockAcquired, LockConflict
from libs.events.lock import ConflictLayer
from services.gateway.context import GatewayContext

__all__ = ["Admitted", "Refused", "admit_run", "precheck"]


@dataclass(frozen=True, slots=True)
class Admitted:
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

    expires_at = time.time() + ctx.settings.queue_timeout_s
    if not await claim_task(ctx.engine, task_id, run_id, lease.fence, expires_at):
        await ctx.locks.release(lease)
        claim = await get_claim(ctx.engine, task_id)
        claim_holder = (
            Holder(run_id=claim.run_id, fence=claim.fence, expires_at=claim.expires_at)
            if claim
            else None
        )
        return await _refuse(ctx, task_id, run_id, "db", claim_holder)

    await ctx.store.append(
        LockAcquired(
            task_id=task_id, run_id=run_id, fence=lease.fence, ttl_ms=ttl_ms, by="gateway"
        ),
        lock_token=lease.token,
    )
    return Admitted(lease)
