"""The local Valkey Cluster the tests and `ragpoc up --cluster` use: formed, spread, failing over.

A `RedisCluster` client is what the services use on a cluster, so it is what these tests drive;
admin commands go to each node directly, to see what every node says rather than what one says.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from libs.events.redis_conn import _stream_keys, connect_redis, detect_cluster, is_cluster
from services.cli.valkey_cluster import ClusterError, LocalCluster
from tests.conftest import free_port


@pytest.fixture
async def cluster_client(valkey_cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(valkey_cluster.url, decode_responses=True)
    yield client
    await client.aclose()


def node_says(port: int, *command: str) -> str:
    client = redis.Redis("127.0.0.1", port, decode_responses=True)
    try:
        answer: str = client.execute_command(*command)  # type: ignore[no-untyped-call]
        return answer
    finally:
        client.close()


def test_the_cluster_has_three_masters_each_with_a_replica(valkey_cluster: LocalCluster) -> None:
    nodes = valkey_cluster.nodes
    masters = {n.node_id for n in nodes if n.role == "master"}
    assert len(masters) == 3
    assert sum(n.role == "replica" for n in nodes) == 3
    assert all(n.pid is not None for n in nodes)
    for node in nodes:
        info = node_says(node.port, "CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert "cluster_slots_assigned:16384" in info
        assert "cluster_known_nodes:6" in info


async def test_keys_land_on_every_master_and_read_back(
    valkey_cluster: LocalCluster, cluster_client: RedisCluster
) -> None:
    prefix = uuid.uuid4().hex
    values = {f"{prefix}:{i}": f"value {i}" for i in range(30)}
    for key, value in values.items():
        await cluster_client.set(key, value)

    masters = {n.port for n in valkey_cluster.nodes if n.role == "master"}
    assert {valkey_cluster.master_of_key(key) for key in values} == masters
    for key, value in values.items():
        assert await cluster_client.get(key) == value
        # stored on the master the slot map names, not just somewhere
        assert node_says(valkey_cluster.master_of_key(key), "GET", key) == value


async def test_a_killed_master_is_replaced_by_its_replica_and_rejoins_as_one(
    fresh_valkey_cluster: LocalCluster,
) -> None:
    cluster = fresh_valkey_cluster
    client = RedisCluster.from_url(cluster.url, decode_responses=True)
    try:
        key = f"{uuid.uuid4().hex}:survivor"
        await client.set(key, "still here")
        old_master = cluster.master_of_key(key)
        # WAIT on the connection that wrote: the replica has the write before its master dies
        acked = await client.execute_command(
            "WAIT", 1, 5000, target_nodes=client.get_node_from_key(key)
        )
        assert acked == 1

        cluster.kill(old_master)
        cluster.wait_failover(old_master, timeout_s=10)

        new_master = cluster.master_of_key(key)
        assert new_master != old_master
        assert await client.get(key) == "still here"  # the same client, following the new map

        cluster.restart(old_master)
        cluster.wait_ready(timeout_s=10)
        roles = {n.port: n.role for n in cluster.nodes}
        assert roles[old_master] == "replica"
        assert roles[new_master] == "master"
    finally:
        await client.aclose()


def test_a_cluster_started_again_on_its_folder_rejoins_instead_of_forming_anew(
    fresh_valkey_cluster: LocalCluster,
) -> None:
    cluster = fresh_valkey_cluster
    before = {(n.port, n.node_id, n.role) for n in cluster.nodes}
    key = f"{uuid.uuid4().hex}:kept"
    node_says(cluster.master_of_key(key), "SET", key, "on disk")
    cluster.stop()

    again = LocalCluster(cluster.data_dir, node_timeout_ms=cluster.node_timeout_ms)
    again.start()
    try:
        assert {(n.port, n.node_id, n.role) for n in again.nodes} == before
        assert node_says(again.master_of_key(key), "GET", key) == "on disk"
    finally:
        again.stop()


def test_a_node_that_is_not_ready_is_named_in_the_error(
    fresh_valkey_cluster: LocalCluster,
) -> None:
    cluster = fresh_valkey_cluster
    master = next(n.port for n in cluster.nodes if n.role == "master")
    node_says(master, "CLUSTER", "RESET", "HARD")  # forgets its peers and its slots

    with pytest.raises(ClusterError, match=r"node 127\.0\.0\.1:\d+ is not ready in 1\.0s"):
        cluster.wait_ready(timeout_s=1.0)


def test_the_services_tell_a_cluster_node_from_a_single_server(
    valkey_cluster: LocalCluster, valkey_server: Any
) -> None:
    assert detect_cluster(valkey_cluster.url)
    assert not detect_cluster(valkey_server.connection_url)
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    assert not detect_cluster(unreachable, timeout_s=0.5)  # a warning, and a single server
    assert is_cluster(connect_redis(valkey_cluster.url))  # RAGPOC_REDIS_CLUSTER=auto
    assert not is_cluster(connect_redis(valkey_server.connection_url))
    assert not is_cluster(connect_redis(valkey_cluster.url, cluster=False))  # said so


def test_the_slot_of_a_stream_read_is_read_off_its_streams_arguments() -> None:
    assert _stream_keys(("COUNT", 5, "BLOCK", 100, "STREAMS", "a{p1}", "b{p1}", "0", "0")) == [
        "a{p1}",
        "b{p1}",
    ]
    group_read = (b"GROUP", b"runners", b"c1", b"COUNT", 2, b"STREAMS", b"x{p3}", b">")
    assert _stream_keys(group_read) == [b"x{p3}"]
    assert _stream_keys(("GET", "k")) == []
