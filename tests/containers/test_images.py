"""The images `make images` builds work: Valkey answers, PostgreSQL takes its env, ragpoc runs.

Driven through the podman CLI, the engine those images are built with. Every container gets a
random host port published on 127.0.0.1 only and is removed at the end, also on failure.
Skipped, with the reason, when podman is missing or an image has not been built.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
import redis

pytestmark = pytest.mark.containers

VALKEY_IMAGE = "localhost/ragpoc-valkey:9"
POSTGRES_IMAGE = "localhost/ragpoc-postgres:15"
PROJECT_IMAGE = "localhost/ragpoc:local"
READY_TIMEOUT_S = 30
PODMAN = shutil.which("podman")


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    assert PODMAN is not None
    return subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def require_image(image: str) -> None:
    if PODMAN is None:
        pytest.skip("podman is not installed (`make images` installs it and builds the images)")
    if podman("image", "exists", image).returncode != 0:
        pytest.skip(f"image {image} is not built: run `make images`")


@contextmanager
def running(image: str, port: int, *options: str) -> Iterator[tuple[str, int]]:
    """A detached container of `image` with `port` published on a random 127.0.0.1 port;
    yields its name and that host port, removes it afterwards."""
    require_image(image)
    name = f"ragpoc-test-images-{uuid.uuid4().hex[:10]}"
    started = podman("run", "-d", "--name", name, "-p", f"127.0.0.1::{port}", *options, image)
    assert started.returncode == 0, started.stderr
    try:
        mapping = podman("port", name, f"{port}/tcp").stdout.strip()
        yield name, int(mapping.rsplit(":", 1)[1])
    finally:
        podman("rm", "-f", "-t", "0", name)


def wait_until_ready(
    name: str, probe: Callable[[], object], errors: tuple[type[Exception], ...]
) -> None:
    """Calls `probe` until it stops raising `errors`; fails with the container's log after
    READY_TIMEOUT_S (the servers start in about a second)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            probe()
            return
        except errors:
            if time.monotonic() > deadline:
                logs = podman("logs", name)
                pytest.fail(f"{name} never became ready:\n{(logs.stdout + logs.stderr)[-3000:]}")
            time.sleep(0.25)


def test_valkey_image_answers_ping_and_xadd() -> None:
    with running(VALKEY_IMAGE, 6379) as (name, port):
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        try:
            wait_until_ready(name, client.ping, (redis.ConnectionError,))
            assert client.ping() is True
            entry = client.xadd("images-test", {"field": "value"})
            assert client.xrange("images-test") == [(entry, {b"field": b"value"})]
        finally:
            client.close()


def test_postgres_image_takes_user_password_and_database_from_env() -> None:
    env = ["-e", "POSTGRES_USER=alice", "-e", "POSTGRES_PASSWORD=s3cret", "-e", "POSTGRES_DB=shop"]
    with running(POSTGRES_IMAGE, 5432, *env) as (name, port):
        url = f"postgresql://alice:s3cret@127.0.0.1:{port}/shop"

        def connect() -> None:
            psycopg.connect(url, connect_timeout=5).close()

        wait_until_ready(name, connect, (psycopg.OperationalError,))
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT current_user::text, current_database()::text").fetchone()
        assert row == ("alice", "shop")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"postgresql://alice:wrong@127.0.0.1:{port}/shop").close()
        # testcontainers' PostgresContainer waits for this line and for psql inside the container
        logs = podman("logs", name)
        assert "database system is ready to accept connections" in logs.stdout + logs.stderr
        inside = [
            "sh",
            "-c",
            "PGPASSWORD=s3cret psql -U alice -d shop -h 127.0.0.1 -tAc 'select 1'",
        ]
        probe = podman("exec", name, *inside)
        assert (probe.returncode, probe.stdout.strip()) == (0, "1"), probe.stderr


def test_project_image_runs_ragpoc_and_has_its_healthcheck() -> None:
    require_image(PROJECT_IMAGE)
    # --health-cmd none: podman would try to schedule the image's HEALTHCHECK through systemd
    helped = podman("run", "--rm", "--health-cmd", "none", PROJECT_IMAGE, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "gateway" in helped.stdout
    check = podman(
        "run",
        "--rm",
        "--health-cmd",
        "none",
        "--entrypoint",
        "sh",
        PROJECT_IMAGE,
        "-c",
        'command -v ragpoc-healthcheck && test -x "$(command -v ragpoc-healthcheck)"',
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "/opt/ragpoc/bin/ragpoc-healthcheck"
