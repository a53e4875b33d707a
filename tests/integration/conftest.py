"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.database import create_engine, create_schema
from libs.events import Keys


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
