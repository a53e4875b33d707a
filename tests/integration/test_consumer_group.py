"""The consumer-group loop against a real server: ack, reclaim, keep-claim, dead-letter, stop."""

from __future__ import annotations

import asyncio
from typing import cast

import redis.asyncio as aioredis

from libs.events import ConsumerOptions, GroupConsumer, Keys
from tests.eventually import eventually


def consumer(
    redis: aioredis.Redis,
    keys: Keys,
    handler,  # type: ignore[no-untyped-def]
    *,
    name: str,
    min_idle_ms: int = 30_000,
    max_deliveries: int = 3,
    on_dead_letter=None,  # type: ignore[no-untyped-def]
) -> GroupConsumer:
    return GroupConsumer(
        redis=redis,
        keys=keys,
        stream=keys.run_commands(0),
        group="workers",
        handler=handler,
        options=ConsumerOptions(
            block_ms=50, min_idle_ms=min_idle_ms, max_deliveries=max_deliveries
        ),
        name=name,
        on_dead_letter=on_dead_letter,
    )


async def pending_count(redis: aioredis.Redis, keys: Keys) -> int:
    summary = await redis.xpending(keys.run_commands(0), "workers")
    return int(summary["pending"])


async def idle_ms(redis: aioredis.Redis, keys: Keys, entry_id: str) -> int:
    """How long the pending entry has gone untouched by its consumer."""
    [entry] = await redis.xpending_range(keys.run_commands(0), "workers", entry_id, entry_id, 1)
    return int(entry["time_since_delivered"])


async def test_an_entry_is_acked_only_after_its_handler_succeeded(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    seen: list[str] = []

    async def handle(entry_id: str, fields: dict[str, str]) -> None:
        assert await pending_count(redis_client, keys) == 1  # still pending while handled
        seen.append(fields["n"])

    worker = consumer(redis_client, keys, handle, name="a")
    await worker.ensure_group()
    for n in range(3):
        await redis_client.xadd(keys.run_commands(0), {"n": str(n)})
    await worker.run(burst=True)
    assert seen == ["0", "1", "2"]
    assert await pending_count(redis_client, keys) == 0


async def test_creating_the_group_twice_is_harmless(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    async def handle(entry_id: str, fields: dict[str, str]) -> None:
        return None

    worker = consumer(redis_client, keys, handle, name="a")
    await worker.ensure_group()
    await worker.ensure_group()
    groups = await redis_client.xinfo_groups(keys.run_commands(0))
    assert [g["name"] for g in groups] == ["workers"]


async def test_a_dead_consumers_pending_entry_is_reclaimed_by_a_live_one(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    handled: list[tuple[str, str]] = []

    async def handle(entry_id: str, fields: dict[str, str]) -> None:
        handled.append((entry_id, fields["job"]))

    live = consumer(redis_client, keys, handle, name="live", min_idle_ms=100)
    await live.ensure_group()
    entry_id = await redis_client.xadd(keys.run_commands(0), {"job": "orphaned"})
    # A consumer that read the entry and died before acking it: the entry stays pending on it.
    await redis_client.xreadgroup("workers", "dead", {keys.run_commands(0): ">"}, count=1)
    assert await pending_count(redis_client, keys) == 1

    await live.run(burst=True)
    assert handled == []  # not idle long enough yet: the dead one might still be working

    await eventually(
        lambda: idle_ms(redis_client, keys, entry_id),
        until=lambda idle: idle > 100,
        message="the dead consumer's entry never went idle for min_idle_ms",
    )
    await live.run(burst=True)
    assert handled == [(entry_id, "orphaned")]
    assert await pending_count(redis_client, keys) == 0


async def test_a_slow_handler_keeps_its_claim_so_no_one_else_takes_the_entry(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    calls: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(entry_id: str, fields: dict[str, str]) -> None:
        calls.append("slow")
        started.set()
        await release.wait()

    async def other(entry_id: str, fields: dict[str, str]) -> None:
        calls.append("other")

    owner = consumer(redis_client, keys, slow, name="owner", min_idle_ms=150)
    thief = consumer(redis_client, keys, other, name="thief", min_idle_ms=150)
    await owner.ensure_group()
    await redis_client.xadd(keys.run_commands(0), {"job": "long"})
    working = asyncio.create_task(owner.process_once())
    await asyncio.wait_for(started.wait(), timeout=5)
    # The scenario itself, not a wait for something: the thief keeps trying for 0.6 s, four
    # times the idle bound, while the owner is still working on the entry.
    for _ in range(6):
        await asyncio.sleep(0.1)
        await thief.run(burst=True)
    release.set()
    await working
    assert calls == ["slow"]
    assert await pending_count(redis_client, keys) == 0


async def test_an_entry_that_keeps_failing_goes_to_the_dead_letter_stream_with_its_reason(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    attempts: list[str] = []
    dead: list[tuple[str, str]] = []

    async def failing(entry_id: str, fields: dict[str, str]) -> None:
        attempts.append(entry_id)
        raise ValueError(f"cannot process job {fields['job']}")

    async def on_dead(entry_id: str, fields: dict[str, str], reason: str) -> None:
        dead.append((entry_id, reason))

    worker = consumer(
        redis_client,
        keys,
        failing,
        name="a",
        min_idle_ms=20,
        max_deliveries=3,
        on_dead_letter=on_dead,
    )
    await worker.ensure_group()
    entry_id = await redis_client.xadd(keys.run_commands(0), {"job": "poison"})

    async def retried_until_dead() -> list[tuple[str, str]]:
        await worker.run(burst=True)  # reclaims the entry once it is idle, and fails again
        return dead

    await eventually(retried_until_dead, message="the poison entry was never dead-lettered")

    assert attempts == [entry_id] * 3
    assert dead == [(entry_id, "ValueError: cannot process job poison")]
    letters = cast(
        list[tuple[str, dict[str, str]]],
        await redis_client.xrange(keys.dead_letters(keys.run_commands(0))),
    )
    assert len(letters) == 1
    fields = letters[0][1]
    assert fields["job"] == "poison"
    assert fields["source_id"] == entry_id
    assert fields["deliveries"] == "3"
    assert fields["reason"] == "ValueError: cannot process job poison"
    assert await pending_count(redis_client, keys) == 0


async def test_stop_lets_the_entry_in_hand_finish_and_ack(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    stop = asyncio.Event()
    finished: list[str] = []

    async def handle(entry_id: str, fields: dict[str, str]) -> None:
        stop.set()  # a SIGTERM arrives while this entry is being handled
        await asyncio.sleep(0.05)  # the handler's own work, which the stop must not cut short
        finished.append(fields["job"])

    worker = consumer(redis_client, keys, handle, name="a")
    await worker.ensure_group()
    await redis_client.xadd(keys.run_commands(0), {"job": "first"})
    await redis_client.xadd(keys.run_commands(0), {"job": "second"})
    await asyncio.wait_for(worker.run(stop), timeout=5)
    assert finished == ["first"]
    # "second" was never read (a consumer reads only as many entries as it can start): nothing
    # is pending, and the next member to read gets it
    assert await pending_count(redis_client, keys) == 0
    reply = await redis_client.xreadgroup("workers", "b", {keys.run_commands(0): ">"})
    assert [fields["job"] for _id, fields in reply[0][1]] == ["second"]
