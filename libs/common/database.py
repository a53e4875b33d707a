"""The SQL database every service shares: the async engine (SQLite in WAL mode, or PostgreSQL),
the one `MetaData` its tables belong to, and schema creation.

Two homes own tables: `libs.readmodels.schema` (the projector's read models and event archive)
and `libs.commandside.schema` (the run claims that guard commands). Each registers its tables on
`metadata` when its package is imported, so `create_schema` creates the tables of every home the
process uses, and nothing here depends on them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["create_engine", "create_schema", "metadata"]

metadata = sa.MetaData()


def create_engine(url: str) -> AsyncEngine:
    """An engine for `url` (an async driver URL: sqlite+aiosqlite or postgresql+psycopg)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


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
