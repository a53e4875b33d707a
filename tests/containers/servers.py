"""Valkey and PostgreSQL in containers for the suite, reachable only from 127.0.0.1.

Each server's port is published on 127.0.0.1 alone (a free port chosen here), the containers
sit on a network the suite creates, and readiness is checked from this side, with the clients
the tests use, so any image that behaves like the official one works (a shell or psql inside it
is not needed). Stopping removes the containers, their volumes and the network.
"""

from __future__ import annotations

import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import redis

with warnings.catch_warnings():
    # testcontainers warns about its own deprecated decorator when imported; the suite turns
    # warnings into errors, and this one is not ours to fix.
    warnings.simplefilter("ignore", DeprecationWarning)
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

from tests.containers.engine import Engine

READY_TIMEOUT_S = 60
POSTGRES_USER = "ragpoc"
POSTGRES_PASSWORD = "ragpoc"
POSTGRES_DB = "test"


@dataclass(frozen=True)
class Servers:
    """Where the suite's servers answer."""

    redis_url: str
    postgres_url: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def publish_on_loopback(container: DockerContainer, port: int) -> int:
    """Publishes `port` on 127.0.0.1 only, at a free host port, and returns that port."""
    host_port = free_port()
    # docker-py takes (address, port) to bind one address; testcontainers passes it through.
    container.ports[port] = ("127.0.0.1", host_port)
    return host_port


def start_and_wait(container: DockerContainer, check: Callable[[], object], what: str) -> None:
    """Starts the container and calls `check` until it stops raising; on a timeout the
    container's log tail explains it and the container is removed."""
    container.start()
    try:
        _wait_until(check, what, container)
    except BaseException:
        container.stop()
        raise


def _wait_until(check: Callable[[], object], what: str, container: DockerContainer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            check()
            return
        except (OSError, redis.RedisError, psycopg.Error) as exc:
            if time.monotonic() > deadline:
                out, err = container.get_logs()
                tail = (out + err).decode(errors="replace")[-800:]
                raise TimeoutError(
                    f"{what} not ready after {READY_TIMEOUT_S}s: {exc}\n{tail}"
                ) from exc
            time.sleep(0.2)


def valkey_container(engine: Engine, network: Network | None = None) -> tuple[DockerContainer, str]:
    container = DockerContainer(engine.images["valkey"])
    port = publish_on_loopback(container, 6379)
    if network is not None:
        container.with_network(network).with_network_aliases("valkey")
    url = f"redis://127.0.0.1:{port}/0"

    def ping() -> None:
        with redis.Redis.from_url(url, socket_timeout=2) as client:
            client.ping()

    start_and_wait(container, ping, f"Valkey at {url}")
    return container, url


def postgres_container(
    engine: Engine, network: Network | None = None
) -> tuple[DockerContainer, str]:
    container = DockerContainer(engine.images["postgres"]).with_envs(
        POSTGRES_USER=POSTGRES_USER, POSTGRES_PASSWORD=POSTGRES_PASSWORD, POSTGRES_DB=POSTGRES_DB
    )
    port = publish_on_loopback(container, 5432)
    if network is not None:
        container.with_network(network).with_network_aliases("postgres")
    url = f"postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}@127.0.0.1:{port}/{POSTGRES_DB}"

    def select() -> None:
        # The official image runs its init scripts on a server without TCP, then restarts:
        # a TCP connection only succeeds once the final server is up.
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")

    start_and_wait(container, select, f"PostgreSQL at 127.0.0.1:{port}")
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_encoding").fetchone()
    if row is None or row[0] != "UTF8":
        container.stop()
        # psycopg hands back bytes instead of str on such a database: every test would fail.
        raise RuntimeError(f"{engine.images['postgres']} made a {row} database, not UTF8")
    return container, url


@contextmanager
def running_servers(engine: Engine) -> Iterator[Servers]:
    """Valkey and PostgreSQL on a network of their own, all removed on the way out."""
    network = Network(docker_network_kw={"labels": {"ragpoc.test": "containers"}})
    network.name = f"ragpoc-test-{uuid.uuid4().hex[:8]}"
    network.create()
    started: list[DockerContainer] = []
    try:
        valkey, redis_url = valkey_container(engine, network)
        started.append(valkey)
        postgres, postgres_url = postgres_container(engine, network)
        started.append(postgres)
        yield Servers(redis_url=redis_url, postgres_url=postgres_url)
    finally:
        for container in reversed(started):
            container.stop()
        network.remove()
