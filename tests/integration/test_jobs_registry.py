"""The worker registry behind `GET /api/jobs`, against a real Redis/Valkey: a worker's record
goes stale after missed heartbeats and is pruned after ten, and a consumer without a registry
writes no record at all."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from libs.events import RUNNERS_GROUP, Keys
from libs.events.consumer import GroupConsumer
from libs.events.workers import WorkerInfo, WorkerRegistry
from tests.integration.jobs_support import BEAT_S


async def test_registry_staleness_and_pruning(redis_client: aioredis.Redis, keys: Keys) -> None:
    registry = WorkerRegistry(redis_client, keys.namespace, interval_s=BEAT_S)
    info = WorkerInfo(id="w1", service="runner", host="h", pid=1, started_at=time.time())
    written = await registry.heartbeat(info)
    assert written.interval_s == BEAT_S
    assert [w.id for w in await registry.live_workers("runner")] == ["w1"]
    later = time.time() + 4 * BEAT_S
    assert await registry.live_workers("runner", now=later) == []
    assert [w.id for w in await registry.workers("runner")] == ["w1"]
    # The scenario itself: w1 stays silent for more than 10 beats (heartbeats stamp the clock's
    # time, so only waiting makes a record that old).
    await asyncio.sleep(11 * BEAT_S)
    other = WorkerInfo(id="w2", service="runner", host="h", pid=2, started_at=time.time())
    await registry.heartbeat(other)  # prunes w1, dead for more than 10 beats
    assert [w.id for w in await registry.workers("runner")] == ["w2"]
    await registry.remove(other)
    assert await registry.workers("runner") == []


async def test_consumer_without_registry_writes_nothing(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    seen: list[str] = []

    async def handle(entry_id: str, _fields: dict[str, str]) -> None:
        seen.append(entry_id)

    consumer = GroupConsumer(
        redis=redis_client,
        keys=keys,
        stream=keys.run_commands(0),
        group=RUNNERS_GROUP,
        handler=handle,
    )
    await consumer.ensure_group()
    entry = await redis_client.xadd(keys.run_commands(0), {"data": "{}"})
    await consumer.run(burst=True)
    assert seen == [entry]
    assert [k async for k in redis_client.scan_iter(match=f"{keys.namespace}:workers:*")] == []
