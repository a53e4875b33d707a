"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.database import create_engine, create_schema
from libs.events import Keys
from tests.integration.inprocess import InProcessStack, in_process_stack

StartStack = Callable[..., AbstractAsyncContextManager[InProcessStack]]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, keys: Keys) -> pytest.MonkeyPatch:
    """The environment a `ragpoc` command run in-process by the test reads: this test's Redis,
    namespace and partitions."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("RAGPOC_NAMESPACE", keys.namespace)
    monkeypatch.setenv("RAGPOC_PARTITIONS", str(keys.partitions))
    return monkeypatch


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The test's database (SQLite, then PostgreSQL) with the schema created."""
    engine = create_engine(database_url)
    await create_schema(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def embedded_redis_url(valkey_server: Any) -> str:
    """The embedded Valkey alone, for a test whose behaviour does not depend on the Redis server
    (`redis_url` runs a test once per server)."""
    url: str = valkey_server.connection_url
    return url


@pytest.fixture
def gateway_stack(embedded_redis_url: str, keys: Keys, tmp_path: Path) -> StartStack:
    """Starts the stack in-process for a test of what the gateway lets through, which depends
    neither on the Redis server nor, mostly, on the SQL backend: on the embedded Valkey and,
    unless `database_url` is given, a SQLite file. Keyword arguments are the settings that
    differ (tokens, limits, ...)."""

    def start(
        database_url: str | None = None, **settings: Any
    ) -> AbstractAsyncContextManager[InProcessStack]:
        sqlite = f"sqlite+aiosqlite:///{tmp_path / 'readmodels.db'}"
        url = database_url or sqlite
        return in_process_stack(embedded_redis_url, url, keys, str(tmp_path), **settings)

    return start
