"""Run claims: the database layer of duplicate protection (one row per task).

A claim is live while its state is "queued" or "running" and it has not expired. The gateway
claims a task with one conditional UPDATE (zero rows: someone else's live claim, 409); the runner
moves it to "running" and keeps it fresh while it holds the lock; every later write compares the
stored fence with the writer's own, so a run that lost its lock cannot change the claim.
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

__all__ = [
    "LIVE_STATES",
    "Claim",
    "ClaimState",
    "claim_task",
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
    expires_at: float
    updated_at: float

    def is_live(self, now: float) -> bool:
        return self.state in LIVE_STATES and self.expires_at > now


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


def _claim(row: Any) -> Claim:
    return msgspec.convert({str(k): v for k, v in row.items()}, Claim, strict=False)


async def claim_task(
    engine: AsyncEngine, task_id: int, run_id: str, fence: int, expires_at: float
) -> bool:
    """The atomic update: claim the task unless another run's claim is live."""
    now = time.time()
    values = {
        "run_id": run_id,
        "fence": fence,
        "state": ClaimState.QUEUED,
        "expires_at": expires_at,
    }
    async with engine.begin() as conn:
        updated = await conn.execute(
            run_claims.update()
            .where(run_claims.c.task_id == task_id)
            .where(sa.or_(run_claims.c.state.not_in(LIVE_STATES), run_claims.c.expires_at < now))
            .values(**values, updated_at=now)
        )
        if updated.rowcount == 1:
            return True
    try:
        async with engine.begin() as conn:
            await conn.execute(
                run_claims.insert().values(task_id=task_id, **values, updated_at=now)
            )
    except IntegrityError:
        return False  # a row exists and its claim is live
    return True


async def _update_one(
    engine: AsyncEngine, task_id: int, conditions: list[Any], **values: object
) -> bool:
    """One conditional UPDATE of the task's claim; True when it matched (and changed) the row."""
    async with engine.begin() as conn:
        updated = await conn.execute(
            run_claims.update()
            .where(run_claims.c.task_id == task_id, *conditions)
            .values(**values, updated_at=time.time())
        )
        return updated.rowcount == 1


async def start_claim(
    engine: AsyncEngine, task_id: int, run_id: str, fence: int, expires_at: float
) -> bool:
    """The runner's start: the claim must still be this run's, at this fence or an older one
    (a lapsed lease re-acquired under a new fence)."""
    conditions = [
        run_claims.c.run_id == run_id,
        run_claims.c.fence <= fence,
        run_claims.c.state.in_(LIVE_STATES),
    ]
    return await _update_one(
        engine, task_id, conditions, state=ClaimState.RUNNING, fence=fence, expires_at=expires_at
    )


async def refresh_claim(engine: AsyncEngine, task_id: int, fence: int, expires_at: float) -> bool:
    conditions = [run_claims.c.fence == fence, run_claims.c.state == ClaimState.RUNNING]
    return await _update_one(engine, task_id, conditions, expires_at=expires_at)


async def finish_claim(engine: AsyncEngine, task_id: int, fence: int, state: ClaimState) -> bool:
    """Fenced: only the run holding the stored fence may finish the claim."""
    conditions = [run_claims.c.fence == fence, run_claims.c.state.in_(LIVE_STATES)]
    return await _update_one(engine, task_id, conditions, state=state)


async def fail_claim_of_run(engine: AsyncEngine, task_id: int, run_id: str) -> bool:
    """For a dead-lettered command: its run will never finish, whatever fence it reached."""
    conditions = [run_claims.c.run_id == run_id, run_claims.c.state.in_(LIVE_STATES)]
    return await _update_one(engine, task_id, conditions, state=ClaimState.FAILED)
