"""A consumer group over every partition's stream on a real Valkey Cluster, where one XREADGROUP
may only name streams of one hash slot: the reads are spread over the partitions, never
deliver more entries than the consumer has free slots, and every entry is handled once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from libs.events import ConsumerOptions, EventStore, GroupConsumer, Keys, connect_redis
from services.cli.valkey_cluster import LocalCluster
from tests.eventually import eventually

GROUP = "workers"


@pytest.fixture
def keys() -> Keys:
    return Keys(namespace=f"c{uuid.uuid4().hex[:10]}", partitions=16)


@pytest.fixture
async def cluster(valkey_cluster: LocalCluster) -> AsyncIterator[aioredis.Redis]:
    client = connect_redis(valkey_cluster.url, cluster=True)
    yield client
    await client.aclose()


class Recorder:
    """A handler that takes a while and remembers what it handled and how many at once."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.handled: Counter[str] = Counter()
        self.running = 0
        self.most_at_once = 0

    async def __call__(self, entry_id: str, fields: dict[str, str]) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.seconds)
            self.handled[fields["job"]] += 1
        finally:
            self.running -= 1


def consumer(
    redis: aioredis.Redis, keys: Keys, handler: Recorder, slots: int, name: str
) -> GroupConsumer:
    options = ConsumerOptions(block_ms=100, concurrency=slots)
    return GroupConsumer(
        redis, keys, keys.run_command_streams(), GROUP, handler, options, name=name
    )


async def pending(redis: aioredis.Redis, keys: Keys) -> int:
    counts = [await redis.xpending(s, GROUP) for s in keys.run_command_streams()]
    return sum(int(c["pending"]) for c in counts)


async def test_entries_in_every_partition_are_handled_once_never_more_at_once_than_slots(
    cluster: aioredis.Redis, keys: Keys
) -> None:
    handler = Recorder()
    worker = consumer(cluster, keys, handler, slots=3, name="a")
    await worker.ensure_group()
    jobs = [f"job-{n}" for n in range(48)]
    for n, job in enumerate(jobs):  # three per partition
        await cluster.xadd(keys.run_commands(n % keys.partitions), {"job": job})

    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await eventually(lambda: len(handler.handled), until=lambda n: n == 48)
    stop.set()
    await running

    assert handler.handled == Counter(jobs)
    assert handler.most_at_once <= 3
    assert await pending(cluster, keys) == 0


async def test_two_consumers_share_the_partitions_and_no_entry_is_handled_twice(
    cluster: aioredis.Redis, keys: Keys
) -> None:
    first, second = Recorder(0.02), Recorder(0.02)
    workers = [consumer(cluster, keys, first, 4, "a"), consumer(cluster, keys, second, 4, "b")]
    await workers[0].ensure_group()
    stop = asyncio.Event()
    running = [asyncio.create_task(w.run(stop)) for w in workers]
    jobs = [f"job-{n}" for n in range(64)]
    for n, job in enumerate(jobs):
        await cluster.xadd(keys.run_commands((n * 7) % keys.partitions), {"job": job})

    def done() -> int:
        return len(first.handled) + len(second.handled)

    await eventually(done, until=lambda n: n == 64)
    stop.set()
    await asyncio.gather(*running)

    assert first.handled + second.handled == Counter(jobs)
    assert not set(first.handled) & set(second.handled)
    assert await pending(cluster, keys) == 0


async def getkeys_calls(cluster: aioredis.Redis) -> int:
    """COMMAND GETKEYS calls on every node: what redis-py's cluster client would send before
    each XREAD / XREADGROUP to learn its keys, had `connect_redis` not told it."""
    replies = await cluster.info("commandstats", target_nodes="all")  # type: ignore[call-arg]
    return sum(
        int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0)) for stats in replies.values()
    )


async def test_following_every_partition_log_reads_each_in_order_once(
    cluster: aioredis.Redis, keys: Keys
) -> None:
    asked_keys = await getkeys_calls(cluster)
    store = EventStore(cluster, keys)
    logs = keys.partition_logs()
    written: dict[str, list[str]] = {log: [] for log in logs}
    for n in range(40):
        log = logs[(n * 5) % len(logs)]
        written[log].append(str(await cluster.xadd(log, {"type": "x", "data": str(n)})))

    seen: dict[str, list[str]] = {log: [] for log in logs}
    follow = store.follow_entries(logs, {}, block_ms=100)
    try:
        while sum(map(len, seen.values())) < 40:
            item = await asyncio.wait_for(anext(follow), 10)
            if item is not None:
                stream, entry = item
                seen[stream].append(entry.entry_id)
    finally:
        await follow.aclose()
    assert seen == written
    assert await getkeys_calls(cluster) == asked_keys  # no extra round trip per read
