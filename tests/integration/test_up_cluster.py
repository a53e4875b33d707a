"""`ragpoc up --cluster`: the supervisor's Valkey Cluster, what it gives the services, and how it
tends the nodes. Only the Redis part of the stack starts here: the services are not needed to
see what they would be given."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from libs.common.settings import load_settings
from services.cli import main
from services.cli.supervisor import Stack, _print_urls
from services.cli.valkey_cluster import LocalCluster
from tests.conftest import free_port


@pytest.fixture
def cluster_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack as `ragpoc up --cluster` builds it, its cluster started and nothing else."""
    stack = Stack(load_settings({"RAGPOC_DATA_DIR": str(tmp_path)}))
    stack.cluster = LocalCluster(
        tmp_path / "valkey-cluster", node_timeout_ms=1000, port_picker=free_port
    )
    try:
        stack.start_redis()
        yield stack
    finally:
        stack.stop()


async def test_the_services_are_given_a_cluster_node_and_told_it_is_a_cluster(
    cluster_stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = cluster_stack.child_env(cluster_stack.redis_url)

    assert cluster_stack.cluster is not None
    assert env["REDIS_URL"] == cluster_stack.redis_url == cluster_stack.cluster.url
    assert env["RAGPOC_REDIS_CLUSTER"] == "1"
    assert (tmp_path / "valkey-cluster" / "node-5" / "nodes.conf").exists()
    client = RedisCluster.from_url(env["REDIS_URL"], decode_responses=True)
    try:
        key = uuid.uuid4().hex
        await client.set(key, "through the cluster")
        assert await client.get(key) == "through the cluster"
    finally:
        await client.aclose()

    _print_urls(cluster_stack.settings, cluster_stack)
    assert f"valkey cluster   {cluster_stack.redis_url} (3 masters" in capsys.readouterr().out


def test_a_node_that_dies_is_started_again_on_its_port_and_rejoins(cluster_stack: Stack) -> None:
    cluster = cluster_stack.cluster
    assert cluster is not None
    victim = next(n.port for n in cluster.nodes if n.role == "replica")
    cluster.kill(victim)

    now = time.monotonic()
    assert cluster_stack.tend(now) is None  # seen dead: due again after the backoff (1 s)
    assert cluster.dead_ports() == [victim]
    assert cluster_stack.tend(now + 1.5) is None

    assert cluster.dead_ports() == []
    cluster.wait_ready(timeout_s=10)
    assert {n.port: n.role for n in cluster.nodes}[victim] == "replica"


def test_stopping_the_stack_stops_every_node(cluster_stack: Stack) -> None:
    cluster = cluster_stack.cluster
    assert cluster is not None

    cluster_stack.stop()

    assert sorted(cluster.dead_ports()) == sorted(cluster.ports)


def test_cluster_with_an_explicit_redis_url_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAGPOC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", "redis://:secret@127.0.0.1:6379/0")

    assert main(["up", "--cluster"]) == 2

    err = capsys.readouterr().err
    assert err.startswith("ragpoc up: --cluster starts its own Valkey Cluster, but REDIS_URL")
    assert "secret" not in err
    assert not (tmp_path / "valkey-cluster").exists()


def test_the_cluster_flag_is_explained_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["up", "--help"])

    assert "--cluster" in capsys.readouterr().out
