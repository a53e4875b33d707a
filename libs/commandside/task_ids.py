"""Task ids: handed out from a counter row in SQL, so no id is ever handed out twice.

Ids used to come from `INCR` in Redis. Valkey persisting with AOF `everysec` can lose its last
second of writes, counter included, and then hand out an id again: the second task's
`task.created` was ignored by the projector and its runs landed on the first task. The
database commits the counter before the id is returned (on SQLite with `synchronous=FULL`
for that one transaction: the engine's NORMAL can lose a commit to a power cut), so a
restarted Valkey cannot take it back.

Why not keep `INCR` and raise the Redis counter to the largest task id the read models know
after a restart? Because the read models know only what the projector saw: a `task.created`
lost with Valkey's last second never reached them, so that id would be handed out again, to
another task, while its first client still holds it. Here a lost `task.created` only leaves a
gap.

The first allocation of a deployment starts the counter above `floor()` (the caller's highest
id handed out before this module existed: the old Redis counter, the read models).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.commandside.errors import CommandSideError
from libs.commandside.schema import id_counters
from libs.common.database import one_writer

__all__ = ["TASK_COUNTER", "allocate_task_id"]

TASK_COUNTER = "task"
SQLITE_FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


async def allocate_task_id(engine: AsyncEngine, floor: Callable[[], Awaitable[int]]) -> int:
    """The next task id, committed durably before it is returned. `floor` is asked once per
    deployment, when the counter row does not exist yet: the counter starts above it."""
    for _ in range(3):  # a concurrent first allocation may insert the row between our tries
        allocated = await _next_id(engine)
        if allocated is not None:
            return allocated
        first = await floor() + 1  # no connection held meanwhile: `floor` may need one
        if await _start_counter(engine, first):
            return first
    raise CommandSideError("the task-id counter row kept appearing and vanishing; retry")


async def _next_id(engine: AsyncEngine) -> int | None:
    """One more than the counter, or None when the counter row does not exist yet."""
    async with one_writer(engine), engine.connect() as conn, _durable_commits(conn), conn.begin():
        allocated = (
            await conn.execute(
                id_counters.update()
                .where(id_counters.c.name == TASK_COUNTER)
                .values(last_id=id_counters.c.last_id + 1)
                .returning(id_counters.c.last_id)
            )
        ).scalar()
    return None if allocated is None else int(allocated)


async def _start_counter(engine: AsyncEngine, first: int) -> bool:
    """Create the counter row with `first` handed out; False if another gateway created it."""
    try:
        async with (
            one_writer(engine),
            engine.connect() as conn,
            _durable_commits(conn),
            conn.begin(),
        ):
            await conn.execute(id_counters.insert().values(name=TASK_COUNTER, last_id=first))
    except IntegrityError:
        return False
    return True


@asynccontextmanager
async def _durable_commits(conn: AsyncConnection) -> AsyncIterator[None]:
    """On SQLite, `PRAGMA synchronous=FULL` for the connection while in the block (the WAL is
    synced at every commit), then its previous level again; on other databases, nothing. The
    level can only change outside a transaction, so the block starts and ends outside one."""
    if conn.dialect.name != "sqlite":
        yield
        return
    level = int((await conn.exec_driver_sql("PRAGMA synchronous")).scalar() or 0)
    await conn.commit()
    if level >= SQLITE_FULL:
        yield
        return
    await conn.exec_driver_sql(f"PRAGMA synchronous={SQLITE_FULL}")
    await conn.commit()
    try:
        yield
    finally:
        await conn.rollback()  # out of any transaction an error left open
        await conn.exec_driver_sql(f"PRAGMA synchronous={level}")
        await conn.commit()
