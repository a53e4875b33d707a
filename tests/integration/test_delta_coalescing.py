"""A run's streamed answer becomes `llm.delta` events: the first piece at once, the pieces the
model streams within the interval after it together, and never a lost or repeated piece; a lost
lock stops the stream with `LockNotHeld`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from libs.commandside.locks import Lease, TaskLocks
from libs.events import EventStore, Keys, LlmDelta, LockNotHeld, RunAgent
from services.runner.deltas import stream_deltas
from tests.eventually import eventually

TASK = 5


async def leased(redis_client: aioredis.Redis, keys: Keys) -> tuple[Lease, RunAgent]:
    run_id = uuid.uuid4().hex
    lease = await TaskLocks(redis_client, keys).acquire(TASK, run_id, 30_000)
    assert isinstance(lease, Lease)
    command = RunAgent(task_id=TASK, run_id=run_id, fence=lease.fence, question="q")
    return lease, command


async def deltas(store: EventStore) -> list[LlmDelta]:
    return [s.event for s in await store.task_events(TASK) if isinstance(s.event, LlmDelta)]


async def test_the_first_piece_goes_at_once_and_the_next_ones_together(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    store = EventStore(redis_client, keys)
    lease, command = await leased(redis_client, keys)

    async def model() -> AsyncIterator[str]:
        yield "The "
        # the first piece is in the log before the model streams another one
        await eventually(lambda: deltas(store), until=lambda found: len(found) == 1)
        for word in ("sky ", "is ", "blue"):
            yield word  # within one interval: these three become one event
        await asyncio.sleep(0.3)  # past the interval: the next piece goes by itself
        yield "."

    answer = await stream_deltas(model(), command, lease, store, interval_s=0.2)

    found = await deltas(store)
    assert answer == "The sky is blue."
    assert [d.text for d in found] == ["The ", "sky is blue", "."]
    assert [d.index for d in found] == [0, 1, 2]
    assert {(d.run_id, d.fence) for d in found} == {(command.run_id, lease.fence)}


async def test_interval_zero_sends_one_event_per_piece(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    store = EventStore(redis_client, keys)
    lease, command = await leased(redis_client, keys)

    async def model() -> AsyncIterator[str]:
        for word in ("a", "b", "", "c"):
            yield word
            await asyncio.sleep(0.01)

    assert await stream_deltas(model(), command, lease, store, interval_s=0) == "abc"
    assert [d.text for d in await deltas(store)] == ["a", "b", "c"]


async def test_a_run_that_lost_its_lock_stops_streaming(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    store = EventStore(redis_client, keys)
    lease, command = await leased(redis_client, keys)
    streamed_after_loss = 0

    async def model() -> AsyncIterator[str]:
        nonlocal streamed_after_loss
        yield "first"
        await eventually(lambda: deltas(store), until=lambda found: len(found) == 1)
        await redis_client.delete(keys.task_lock(TASK))  # the lease lapsed; another may take it
        for _ in range(200):
            streamed_after_loss += 1
            yield "more "
            await asyncio.sleep(0.005)

    with pytest.raises(LockNotHeld):
        await stream_deltas(model(), command, lease, store, interval_s=0.02)
    assert streamed_after_loss < 200, "the model kept streaming into a run that lost its lock"
    assert [d.text for d in await deltas(store)] == ["first"]
