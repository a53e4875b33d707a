"""Where `ragpoc events` and `ragpoc state` read history: Redis, and the SQL event archive for
whatever Redis trimmed (when there is one to read). They write nothing."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common import Settings
from libs.common.database import create_engine
from libs.events import EventStore, Keys, connect_redis
from services.cli.settings import run_async, settings_for

__all__ = ["BLOCK_MS", "Sources", "archive_url", "open_archive", "run_reader"]

BLOCK_MS = 1000  # the longest XREAD BLOCK of `--follow`


@dataclass(frozen=True, slots=True)
class Sources:
    """The event store on Redis, and the archive's engine (None when there is none)."""

    store: EventStore
    archive: AsyncEngine | None


def archive_url(settings: Settings) -> str | None:
    """The database holding the event archive; None when it is a SQLite file that does not
    exist (reading must not create it)."""
    url = settings.sqlalchemy_url
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return None
    return url


async def open_archive(url: str | None, command: str) -> AsyncEngine | None:
    """The SQL event archive, or None when there is none to read: no database, no `events`
    table, or a database that does not answer (then with a warning: only what Redis still
    holds is shown)."""
    if url is None:
        return None
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            found = await conn.run_sync(lambda sync: sa.inspect(sync).has_table("events"))
    except (SQLAlchemyError, OSError) as exc:
        print(
            f"ragpoc {command}: cannot read the event archive ({exc}); showing only what "
            "Redis still holds",
            file=sys.stderr,
        )
        found = False
    if not found:
        await engine.dispose()
        return None
    return engine


async def _read(settings: Settings, command: str, body: Callable[[Sources], Awaitable[int]]) -> int:
    keys = Keys(namespace=settings.namespace, partitions=settings.partitions)
    redis = connect_redis(
        settings.redis_url,
        max_connections=4,
        socket_timeout=BLOCK_MS / 1000 + 5,
        cluster=settings.cluster_mode,
    )
    archive = await open_archive(archive_url(settings), command)
    try:
        return await body(Sources(EventStore(redis, keys), archive))
    finally:
        await redis.aclose()
        if archive is not None:
            await archive.dispose()


def run_reader(command: str, body: Callable[[Sources], Awaitable[int]]) -> int:
    """Run `body` on the sources of `ragpoc COMMAND`; its exit code, 2 when the environment is
    incomplete, 1 when Redis cannot be reached, 0 on Ctrl-C or a closed stdout."""
    settings = settings_for(command, needs_redis=True)
    if settings is None:
        return 2
    return run_async(command, settings, _read(settings, command, body))
