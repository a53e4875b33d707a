"""The SQL database every service shares: the async engine (SQLite in WAL mode, or PostgreSQL),
the one `MetaData` its tables belong to, and schema creation.

Two homes own tables: `libs.readmodels.schema` (the projector's read models and event archive)
and `libs.commandside.schema` (the run claims that guard commands). Each registers its tables on
`metadata` when its package is imported, so `create_schema` creates the tables of every home the
process uses, and nothing here depends on them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = ["create_engine", "create_schema", "metadata", "one_writer", "write_transaction"]

metadata = sa.MetaData()


SQLITE_POOL = 20  # connections kept (and as many more at a peak) per process, on SQLite


def create_engine(url: str) -> AsyncEngine:
    """An engine for `url` (an async driver URL: sqlite+aiosqlite or postgresql+psycopg)."""
    if url.startswith("sqlite"):
        # A process's concurrent requests or runs each hold a connection while they read; one
        # past the pool is closed when returned, and the next costs a thread and the pragmas.
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, pool_size=SQLITE_POOL, max_overflow=SQLITE_POOL
        )

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


# One lock per SQLite engine (so per process and database): see `one_writer`.
_SQLITE_WRITERS: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def one_writer(engine: AsyncEngine) -> AsyncIterator[None]:
    """On SQLite, hold the process's turn to write; elsewhere nothing. SQLite has one writer at
    a time, and a connection that finds the database locked sleeps in growing steps (up to
    100 ms) before it looks again: many writers of one process (a gateway's concurrent
    requests, a runner's concurrent runs) would sleep past each other's commits, some for
    hundreds of ms. Queued on this lock they take their turns as soon as each commit is done,
    and only the turn's holder ever contends with the other processes."""
    if engine.dialect.name != "sqlite":
        yield
        return
    lock = _SQLITE_WRITERS.get(engine)
    if lock is None:
        lock = _SQLITE_WRITERS.setdefault(engine, asyncio.Lock())
    async with lock:
        yield


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """`engine.begin()` for a transaction that writes, taking its turn (`one_writer`)."""
    async with one_writer(engine), engine.begin() as conn:
        yield conn


SCHEMA_ATTEMPTS = 5


async def create_schema(engine: AsyncEngine) -> None:
    """Create the tables (of every imported home) that do not exist yet. Several processes
    starting at once (gateways, runners, the projector) race to create the same tables: the
    loser's CREATE fails with "already exists" and it looks again, finding them there."""
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            return
        except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError) as exc:
            if "already exists" not in str(exc) or attempt == SCHEMA_ATTEMPTS:
                raise
