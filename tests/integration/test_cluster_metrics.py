"""The gateway's cluster gauges read from a real Redis: consumer lag and the age of the oldest
undelivered command, pending commands and their idle time, dead letters, live workers and their
slots, the projector's lag per partition; the runners' gauges summed (or the max taken) over
every partition's run-command stream and the pre-partition one while it exists; and a Redis
that does not answer costs the scrape those gauges, not the whole page."""

from __future__ import annotations

import time
from typing import cast

import msgspec
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio.cluster import RedisCluster

from libs.events import INGESTORS_GROUP, RUNNERS_GROUP, Keys, connect_redis
from libs.events.redis_typing import awaitable
from libs.events.workers import WorkerInfo, WorkerRegistry
from services.cli.valkey_cluster import LocalCluster
from services.gateway.cluster_metrics import ClusterCollector, read_cluster
from services.gateway.metrics import _bounded
from tests.conftest import free_port


def samples(collector: ClusterCollector) -> dict[tuple[str, tuple[str, ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    page = generate_latest(registry).decode()
    return {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


async def test_the_gauges_read_lag_pending_dead_letters_workers_and_projector_lag(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    now_ms = int(time.time() * 1000)
    for stream in keys.run_command_streams():  # the runners' group is on every partition
        await redis_client.xgroup_create(stream, RUNNERS_GROUP, id="0", mkstream=True)
    await redis_client.xgroup_create(keys.ingest_commands, INGESTORS_GROUP, id="0", mkstream=True)
    # three commands in two partitions, appended 90, 60 and 30 seconds ago
    first, second = keys.run_commands(1), keys.run_commands(2)
    for stream, age_s in ((first, 90), (first, 60), (second, 30)):
        await redis_client.xadd(stream, {"data": "{}"}, id=f"{now_ms - age_s * 1000}-0")
    await redis_client.xreadgroup(RUNNERS_GROUP, "runner-a", {first: ">"}, count=1)
    await redis_client.xadd(keys.dead_letters(first), {"reason": "boom"})
    await redis_client.xadd(keys.dead_letters(second), {"reason": "boom"})
    registry = WorkerRegistry(redis_client, keys.namespace)
    started = time.time()
    for name, in_hand in (("runner-a", 1), ("runner-b", 0)):
        info = WorkerInfo(id=name, service="runner", host="h", pid=1, started_at=started, slots=4)
        await registry.heartbeat(msgspec.structs.replace(info, entries_in_hand=in_hand))
    # partition 1: the projector is at the first of two entries 40 and 20 seconds old;
    # partition 2: caught up; partition 3: nothing announced, one entry 10 seconds old
    older, newer = f"{now_ms - 40_000}-0", f"{now_ms - 20_000}-0"
    await redis_client.xadd(keys.partition_log(1), {"data": "x"}, id=older)
    await redis_client.xadd(keys.partition_log(1), {"data": "x"}, id=newer)
    await redis_client.xadd(keys.partition_log(2), {"data": "x"}, id=f"{now_ms - 5000}-0")
    await redis_client.xadd(keys.partition_log(3), {"data": "x"}, id=f"{now_ms - 10_000}-0")
    positions = {1: older, 2: f"{now_ms - 5000}-0"}
    await awaitable(redis_client.hset(keys.projected, mapping=positions))

    got = samples(ClusterCollector(await read_cluster(redis_client, keys), sse_clients=7))

    runner, ingestor = ("runner",), ("ingestor",)
    assert got[("ragpoc_cluster_read_ok", ())] == 1
    assert got[("ragpoc_sse_clients", ())] == 7
    assert got[("ragpoc_stream_lag", runner)] == 2  # one in each partition
    # the oldest undelivered over both partitions: partition 1's second command
    assert 58 <= got[("ragpoc_stream_oldest_undelivered_seconds", runner)] <= 70
    assert got[("ragpoc_stream_pending", runner)] == 1
    assert 0 <= got[("ragpoc_stream_pending_max_idle_seconds", runner)] < 5
    assert got[("ragpoc_dead_letters", runner)] == 2  # one in each partition's dead letters
    assert got[("ragpoc_workers_live", runner)] == 2
    assert got[("ragpoc_worker_slots", runner)] == 8
    assert got[("ragpoc_worker_entries_in_hand", runner)] == 1
    assert got[("ragpoc_stream_lag", ingestor)] == 0
    assert got[("ragpoc_workers_live", ingestor)] == 0
    assert got[("ragpoc_dead_letters", ingestor)] == 0
    assert 18 <= got[("ragpoc_projector_lag_seconds", ("1",))] <= 30
    assert got[("ragpoc_projector_lag_seconds", ("2",))] == 0
    assert 8 <= got[("ragpoc_projector_lag_seconds", ("3",))] <= 20
    assert got[("ragpoc_projector_lag_seconds", ("0",))] == 0


async def test_the_pre_partition_run_stream_counts_while_it_exists(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    now_ms = int(time.time() * 1000)
    legacy, partition = keys.legacy_run_commands, keys.run_commands(3)
    for stream, age_s in ((legacy, 120), (partition, 10)):
        await redis_client.xgroup_create(stream, RUNNERS_GROUP, id="0", mkstream=True)
        await redis_client.xadd(stream, {"data": "{}"}, id=f"{now_ms - age_s * 1000}-0")
        await redis_client.xadd(keys.dead_letters(stream), {"reason": "boom"})
    await redis_client.xadd(legacy, {"data": "{}"}, id=f"{now_ms - 100_000}-0")
    await redis_client.xreadgroup(RUNNERS_GROUP, "runner-a", {legacy: ">"}, count=1)

    got = samples(ClusterCollector(await read_cluster(redis_client, keys), sse_clients=0))
    runner = ("runner",)
    assert got[("ragpoc_stream_lag", runner)] == 2  # one left in each stream
    assert got[("ragpoc_stream_pending", runner)] == 1
    # the older of the two: the old stream's second command
    assert 98 <= got[("ragpoc_stream_oldest_undelivered_seconds", runner)] <= 110
    assert got[("ragpoc_dead_letters", runner)] == 2

    await redis_client.delete(legacy)  # drained and removed after the upgrade
    got = samples(ClusterCollector(await read_cluster(redis_client, keys), sse_clients=0))
    assert got[("ragpoc_stream_lag", runner)] == 1
    assert got[("ragpoc_stream_pending", runner)] == 0
    assert 8 <= got[("ragpoc_stream_oldest_undelivered_seconds", runner)] <= 20
    assert got[("ragpoc_dead_letters", runner)] == 2  # its dead letters outlive it


async def test_on_a_cluster_the_partitions_on_every_shard_are_summed(
    valkey_cluster: LocalCluster, keys: Keys
) -> None:
    """The same reads on a Valkey Cluster, where the partitions' streams sit on different
    masters: every pipeline spans shards, and streams that do not exist yet answer errors."""
    client = connect_redis(valkey_cluster.url, cluster=True)
    streams = keys.run_command_streams()
    try:
        for stream in streams[:3]:  # the fourth partition's stream is never created
            await client.xgroup_create(stream, RUNNERS_GROUP, id="0", mkstream=True)
            await client.xadd(stream, {"data": "{}"})
            await client.xadd(keys.dead_letters(stream), {"reason": "boom"})
        await client.xreadgroup(RUNNERS_GROUP, "runner-a", {streams[0]: ">"}, count=1)
        got = samples(ClusterCollector(await read_cluster(client, keys), sse_clients=0))
        masters = {cast(RedisCluster, client).get_node_from_key(s).name for s in streams}
    finally:
        for stream in streams:
            await client.delete(stream, keys.dead_letters(stream))  # one slot: same {pK} tag
        await client.aclose()

    assert len(masters) > 1
    runner = ("runner",)
    assert got[("ragpoc_cluster_read_ok", ())] == 1
    assert got[("ragpoc_stream_lag", runner)] == 2
    assert got[("ragpoc_stream_pending", runner)] == 1
    assert got[("ragpoc_dead_letters", runner)] == 3


async def test_a_missing_group_leaves_its_lag_out(redis_client: aioredis.Redis, keys: Keys) -> None:
    got = samples(ClusterCollector(await read_cluster(redis_client, keys), sse_clients=0))
    assert ("ragpoc_stream_lag", ("runner",)) not in got
    assert got[("ragpoc_workers_live", ("runner",))] == 0


async def test_a_redis_that_does_not_answer_leaves_the_cluster_gauges_out(keys: Keys) -> None:
    nobody = connect_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        snapshot = await _bounded(read_cluster(nobody, keys), "cluster")
    finally:
        await nobody.aclose()
    assert snapshot is None
    got = samples(ClusterCollector(snapshot, sse_clients=3))
    assert got == {("ragpoc_sse_clients", ()): 3, ("ragpoc_cluster_read_ok", ()): 0}
