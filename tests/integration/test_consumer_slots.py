"""A consumer with several slots handles that many entries at once, reads no more than it can
start (the rest stays in the stream for other members), shows its slots in its heartbeat, and on
stop lets the entries in hand finish within a bound, leaving the rest pending."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from libs.events import ConsumerOptions, GroupConsumer, Keys
from libs.events.workers import WorkerRegistry
from tests.eventually import eventually

GROUP = "workers"


def slotted(
    redis: aioredis.Redis,
    keys: Keys,
    handler,
    slots: int,
    **options: float,  # type: ignore[no-untyped-def]
) -> GroupConsumer:
    return GroupConsumer(
        redis=redis,
        keys=keys,
        stream=keys.run_commands(0),
        group=GROUP,
        handler=handler,
        options=ConsumerOptions(block_ms=50, concurrency=slots, **options),  # type: ignore[arg-type]
        name="slotted",
        registry=WorkerRegistry(redis, keys.namespace, interval_s=0.1),
        service="runner",
    )


async def pending(redis: aioredis.Redis, keys: Keys) -> int:
    return int((await redis.xpending(keys.run_commands(0), GROUP))["pending"])


async def test_three_slots_handle_three_entries_at_once_and_read_no_more(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    release = asyncio.Event()
    started: list[str] = []
    finished: list[str] = []

    async def handle(entry_id: str, fields: dict[str, str]) -> None:
        started.append(fields["job"])
        await release.wait()
        finished.append(fields["job"])

    worker = slotted(redis_client, keys, handle, slots=3)
    await worker.ensure_group()
    for n in range(5):
        await redis_client.xadd(keys.run_commands(0), {"job": str(n)})
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))

    await eventually(lambda: len(started) == 3, message="three entries never ran at once")
    await asyncio.sleep(0.2)  # time enough to read more, if it would
    assert started == ["0", "1", "2"]
    assert await pending(redis_client, keys) == 3  # the other two were never read
    [beat] = await eventually(
        lambda: WorkerRegistry(redis_client, keys.namespace).live_workers("runner"),
        until=lambda workers: workers and workers[0].entries_in_hand == 3,
    )
    assert (beat.slots, beat.current_entry is not None) == (3, True)

    release.set()
    await eventually(lambda: len(finished) == 5, message="not every entry was handled")
    await eventually(lambda: pending(redis_client, keys), until=lambda n: n == 0)
    stop.set()
    await asyncio.wait_for(running, 5)


async def test_stop_lets_entries_in_hand_finish_within_the_drain_bound_and_leaves_the_rest(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    finished: list[str] = []

    async def handle(entry_id: str, fields: dict[str, str]) -> None:
        await asyncio.sleep(float(fields["seconds"]))
        finished.append(fields["job"])

    worker = slotted(redis_client, keys, handle, slots=2, drain_s=0.5)
    await worker.ensure_group()
    await redis_client.xadd(keys.run_commands(0), {"job": "quick", "seconds": "0.2"})
    slow = await redis_client.xadd(keys.run_commands(0), {"job": "slow", "seconds": "30"})
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await eventually(lambda: pending(redis_client, keys), until=lambda n: n == 2)

    stop.set()
    await asyncio.wait_for(running, 5)  # the slow one was cut after 0.5 s, not waited for

    assert finished == ["quick"]
    still = await redis_client.xpending_range(keys.run_commands(0), GROUP, "-", "+", 10)
    assert [p["message_id"] for p in still] == [slow]  # pending, for a live member to reclaim
