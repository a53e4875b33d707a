"""The SQL database every service shares: the async engine (SQLite in WAL mode, or PostgreSQL),
the one `MetaData` its tables belong to, and schema creation.

Two homes own tables: `libs.readmodels.schema` (the projector's read models and event archive)
and `libs.commandside.schema` (the run claims that guard commands). Each registers its tables on
`metadata` when its package is imported, so `create_schema` creates the tables of every home the
process uses, and nothing here depends on them.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
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


@dataclass
class _Writers:
    """A process's turn to write one SQLite database: an asyncio lock for its own tasks, and an
    advisory lock on a file beside the database for its turn among the other processes."""

    turn: asyncio.Lock
    lock_file: int | None  # a descriptor of `<database>-writer.lock`; None: no file (in memory)


_SQLITE_WRITERS: weakref.WeakKeyDictionary[AsyncEngine, _Writers] = weakref.WeakKeyDictionary()
FILE_LOCK_POLL_S = 0.0005


@asynccontextmanager
async def one_writer(engine: AsyncEngine) -> AsyncIterator[None]:
    """On SQLite, hold this process's turn to write; elsewhere nothing.

    SQLite has one writer at a time, and a connection that finds the database locked sleeps in
    growing steps (up to 100 ms) before it looks again: writers would sleep past each other's
    commits, some for hundreds of ms, while the database sat idle. So writers queue instead:
    the tasks of one process on an asyncio lock, the processes (gateways, runners, the
    projector) on an advisory lock of a file beside the database, looked at every half
    millisecond without blocking the event loop. The kernel drops a dead process's lock."""
    if engine.dialect.name != "sqlite":
        yield
        return
    writers = _SQLITE_WRITERS.get(engine) or _SQLITE_WRITERS.setdefault(
        engine, _Writers(asyncio.Lock(), _open_lock_file(engine))
    )
    async with writers.turn:
        fd = writers.lock_file
        if fd is None:
            yield
            return
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(FILE_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _open_lock_file(engine: AsyncEngine) -> int | None:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    fd = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    weakref.finalize(engine, os.close, fd)
    return fd


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
