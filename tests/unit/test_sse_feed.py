"""A client's feed from the SSE hub: what waits is sent as one batch in order, a quiet client gets
heartbeats, and a client that falls QUEUE_LIMIT events behind gets what it has and is ended (its
browser resumes from the last id it got)."""

from __future__ import annotations

import asyncio

import pytest

from libs.events import EventStore, Keys, LlmDelta, connect_redis
from libs.events.store import StoredEvent
from services.gateway.hub import HEARTBEAT, QUEUE_LIMIT, EventHub, LiveEvent, live_events


def delta(index: int) -> LiveEvent:
    stored = StoredEvent(
        f"{index + 1}-0", f"{index + 1}-0", LlmDelta(task_id=7, run_id="r", index=index, text="x")
    )
    return LiveEvent(stored, "{}")


def hub() -> EventHub:  # never started: these tests feed it by hand, without Redis
    return EventHub(EventStore(connect_redis("redis://127.0.0.1:1"), Keys("feedtest", 4)))


async def test_events_waiting_together_come_as_one_batch_in_order() -> None:
    events = hub()
    subscription = events.subscribe(7)
    for index in range(3):
        events._dispatch(delta(index).stored)
    feed = live_events(subscription, heartbeat_s=5.0)
    batch = await anext(feed)
    assert batch is not None
    assert [live.stored.stream_id for live in batch] == ["1-0", "2-0", "3-0"]
    events._dispatch(delta(3).stored)
    batch = await asyncio.wait_for(anext(feed), 1.0)
    assert batch is not None
    assert [live.stored.stream_id for live in batch] == ["4-0"]
    await feed.aclose()


async def test_a_quiet_client_gets_a_heartbeat_after_each_quiet_interval() -> None:
    events = hub()
    subscription = events.subscribe(7)
    feed = live_events(subscription, heartbeat_s=0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(anext(feed), 1.0) is HEARTBEAT
    assert await asyncio.wait_for(anext(feed), 1.0) is HEARTBEAT
    assert loop.time() - started >= 0.19
    events._dispatch(delta(0).stored)
    batch = await asyncio.wait_for(anext(feed), 1.0)
    assert batch is not None
    assert len(batch) == 1
    await feed.aclose()


async def test_a_client_too_far_behind_gets_what_it_has_then_its_feed_ends() -> None:
    events = hub()
    slow, other = events.subscribe(7), events.subscribe(7)
    for index in range(QUEUE_LIMIT + 1):
        events._dispatch(delta(index).stored)
    assert slow.overflowed
    assert other.overflowed
    assert events.clients == 0
    received = [live async for batch in live_events(slow, 5.0) if batch for live in batch]
    assert [live.stored.stream_id for live in received] == [
        f"{index + 1}-0" for index in range(QUEUE_LIMIT)
    ]


async def test_the_hub_stopping_ends_every_feed() -> None:
    events = hub()
    subscription = events.subscribe(7)
    feed = live_events(subscription, heartbeat_s=5.0)
    waiting = asyncio.ensure_future(anext(feed))
    await asyncio.sleep(0.01)
    await events.stop()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 1.0)
