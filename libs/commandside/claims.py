"""Run claims: the database layer of duplicate protection (one row per task).

A claim is live while its state is "queued" or "running" and it has not expired. The gateway
claims a task with one conditional UPDATE (zero rows: someone else's live claim, 409); the runner
moves it to "running" and keeps it fresh while it holds the lock; every later write compares the
stored fence with the writer's own, so a run that lost its lock cannot change the claim.

One clock: the database's. `expires_at` and `updated_at` are epoch seconds of the database's
`CURRENT_TIMESTAMP` (`db_epoch`), both when written (now + a TTL) and when compared, so a
gateway and a runner whose clocks disagree still agree on whether a claim has expired. A caller
passes a TTL (`ttl_s`); an absolute `expires_at` (the older form of `claim_task`) is read as a
TTL from the caller's own clock (`expires_at - time.time()`), and only that difference is used.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.commandside.schema import run_claims
from libs.common.database import write_transaction

__all__ = [
    "LIVE_STATES",
    "Claim",
    "ClaimState",
    "abandon_claim",
    "cancel_queued_claim",
    "claim_task",
    "database_now",
    "db_epoch",
    "expired_queued_claims",
    "fail_claim_of_run",
    "finish_claim",
    "get_claim",
    "queued_claims",
    "refresh_claim",
    "start_claim",
]


class ClaimState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


LIVE_STATES = (ClaimState.QUEUED, ClaimState.RUNNING)


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    task_id: int
    run_id: str
    fence: int
    state: ClaimState
    expires_at: float  # epoch seconds, by the database's clock
    updated_at: float

    def is_live(self, now: float) -> bool:
        """Live at `now`, a time of the database's clock (`database_now`)."""
        return self.state in LIVE_STATES and self.expires_at > now


def db_epoch(engine: AsyncEngine) -> sa.ColumnElement[float]:
    """The database's now, as epoch seconds: `CURRENT_TIMESTAMP` on PostgreSQL (the start of
    the transaction), `julianday('now')` on SQLite (its CURRENT_TIMESTAMP has whole seconds
    only; this is the same clock to the millisecond)."""
    if engine.dialect.name == "sqlite":
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)
    return sa.literal_column("EXTRACT(EPOCH FROM CURRENT_TIMESTAMP)", sa.Float)


async def database_now(engine: AsyncEngine) -> float:
    """The database clock's now, epoch seconds (what claims expire by)."""
    async with engine.connect() as conn:
        return float((await conn.execute(sa.select(db_epoch(engine)))).scalar_one())


async def get_claim(engine: AsyncEngine, task_id: int) -> Claim | None:
    async with engine.connect() as conn:
        row = (
            (await conn.execute(sa.select(run_claims).where(run_claims.c.task_id == task_id)))
            .mappings()
            .first()
        )
    return None if row is None else _claim(row)


async def queued_claims(engine: AsyncEngine, *, limit: int) -> list[Claim]:
    """The claims of runs queued and not yet started, oldest first (what the jobs view
    explains)."""
    query = (
        sa.select(run_claims)
        .where(run_claims.c.state == ClaimState.QUEUED)
        .order_by(run_claims.c.updated_at)
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [_claim(row) for row in rows]


async def expired_queued_claims(engine: AsyncEngine, *, limit: int) -> list[Claim]:
    """Claims of runs queued longer than their queue timeout and never started: abandoned
    (their admission was cut short, or no runner came in time), oldest first."""
    query = (
        sa.select(run_claims)
        .where(run_claims.c.state == ClaimState.QUEUED, run_claims.c.expires_at < db_epoch(engine))
        .order_by(run_claims.c.expires_at)
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [_claim(row) for row in rows]


def _claim(row: Any) -> Claim:
    return msgspec.convert({str(k): v for k, v in row.items()}, Claim, strict=False)


def _ttl(expires_at: float | None, ttl_s: float | None) -> float:
    if ttl_s is not None:
        return ttl_s
    if expires_at is None:
        raise TypeError("claim_task needs ttl_s (or an absolute expires_at)")
    return expires_at - time.time()  # a duration: the caller's clock offset cancels out


async def claim_task(
    engine: AsyncEngine,
    task_id: int,
    run_id: str,
    fence: int,
    expires_at: float | None = None,
    *,
    ttl_s: float | None = None,
) -> bool:
    """The atomic update: claim the task for `ttl_s` (by the database's clock) unless another
    run's claim is live."""
    now = db_epoch(engine)
    values = {
        "run_id": run_id,
        "fence": fence,
        "state": ClaimState.QUEUED,
        "expires_at": now + _ttl(expires_at, ttl_s),
        "updated_at": now,
    }
    async with write_transaction(engine) as conn:
        updated = await conn.execute(
            run_claims.update()
            .where(run_claims.c.task_id == task_id)
            .where(sa.or_(run_claims.c.state.not_in(LIVE_STATES), run_claims.c.expires_at < now))
            .values(**values)
        )
        if updated.rowcount == 1:
            return True
    try:
        async with write_transaction(engine) as conn:
            await conn.execute(run_claims.insert().values(task_id=task_id, **values))
    except IntegrityError:
        return False  # a row exists and its claim is live
    return True


async def _update_one(
    engine: AsyncEngine, task_id: int, conditions: list[Any], **values: object
) -> bool:
    """One conditional UPDATE of the task's claim; True when it matched (and changed) the row."""
    async with write_transaction(engine) as conn:
        updated = await conn.execute(
            run_claims.update()
            .where(run_claims.c.task_id == task_id, *conditions)
            .values(**values, updated_at=db_epoch(engine))
        )
        return updated.rowcount == 1


async def start_claim(
    engine: AsyncEngine, task_id: int, run_id: str, fence: int, ttl_s: float
) -> bool:
    """The runner's start: the claim must still be this run's, at this fence or an older one
    (a lapsed lease re-acquired under a new fence); it is "running" for `ttl_s`."""
    conditions = [
        run_claims.c.run_id == run_id,
        run_claims.c.fence <= fence,
        run_claims.c.state.in_(LIVE_STATES),
        # a queued claim past its queue timeout is abandoned: the reaper ends its run
        sa.or_(
            run_claims.c.state == ClaimState.RUNNING, run_claims.c.expires_at >= db_epoch(engine)
        ),
    ]
    expires_at = db_epoch(engine) + ttl_s
    return await _update_one(
        engine, task_id, conditions, state=ClaimState.RUNNING, fence=fence, expires_at=expires_at
    )


async def refresh_claim(engine: AsyncEngine, task_id: int, fence: int, ttl_s: float) -> bool:
    """Fenced: the running claim at `fence` is live for another `ttl_s`."""
    conditions = [run_claims.c.fence == fence, run_claims.c.state == ClaimState.RUNNING]
    return await _update_one(engine, task_id, conditions, expires_at=db_epoch(engine) + ttl_s)


async def finish_claim(engine: AsyncEngine, task_id: int, fence: int, state: ClaimState) -> bool:
    """Fenced: only the run holding the stored fence may finish the claim."""
    conditions = [run_claims.c.fence == fence, run_claims.c.state.in_(LIVE_STATES)]
    return await _update_one(engine, task_id, conditions, state=state)


async def cancel_queued_claim(engine: AsyncEngine, task_id: int, run_id: str, fence: int) -> bool:
    """The gateway's undo of an admission that did not queue its run: the claim goes back to
    "failed" (not live) only while it is still this run's, at this fence, and queued."""
    conditions = [
        run_claims.c.run_id == run_id,
        run_claims.c.fence == fence,
        run_claims.c.state == ClaimState.QUEUED,
    ]
    return await _update_one(engine, task_id, conditions, state=ClaimState.FAILED)


async def abandon_claim(engine: AsyncEngine, task_id: int, run_id: str, fence: int) -> bool:
    """The reaper's step: the claim goes to "failed" only while it is still this run's, at this
    fence, queued and past its queue timeout (a runner that starts it first wins)."""
    conditions = [
        run_claims.c.run_id == run_id,
        run_claims.c.fence == fence,
        run_claims.c.state == ClaimState.QUEUED,
        run_claims.c.expires_at < db_epoch(engine),
    ]
    return await _update_one(engine, task_id, conditions, state=ClaimState.FAILED)


async def fail_claim_of_run(engine: AsyncEngine, task_id: int, run_id: str, fence: int) -> bool:
    """Fenced, for a run reported failed or superseded at `fence`: the claim is failed only if
    it is still this run's, live, at that fence or an older one (a later acquisition of the run,
    or another run, has moved it on otherwise)."""
    conditions = [
        run_claims.c.run_id == run_id,
        run_claims.c.fence <= fence,
        run_claims.c.state.in_(LIVE_STATES),
    ]
    return await _update_one(engine, task_id, conditions, state=ClaimState.FAILED)
