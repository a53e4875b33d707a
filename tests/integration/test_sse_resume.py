"""SSE resume: a client that disconnects after k events and reconnects with Last-Event-ID gets
exactly the events after k, none twice, none missing; also after Redis trimmed the stream (the
rest comes from the SQL archive); many clients share one reader per gateway."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from libs.events import Keys
from tests.integration.inprocess import InProcessStack, in_process_stack
from tests.sse_client import sse_frames


@pytest.fixture
async def stack(redis_url: str, keys: Keys, tmp_path: Path) -> AsyncIterator[InProcessStack]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with in_process_stack(redis_url, database_url, keys, str(tmp_path)) as running:
        yield running


async def read_events(
    client: httpx.AsyncClient,
    task_id: int,
    *,
    count: int | None = None,
    last_id: str = "",
    received: asyncio.Event | None = None,
) -> list[tuple[str, str]]:
    """(id, type) of the task's frames, until `count` frames or its lock.released; `received`
    is set at the first frame (the gateway subscribes a client before it sends any)."""
    frames = await sse_frames(
        client,
        f"/events/tasks/{task_id}",
        count=count,
        last_id=last_id,
        until=lambda frame: frame["event"] == "lock.released",
        received=received,
    )
    for frame in frames:
        json.loads(frame["data"])
    return [(frame["id"], frame["event"]) for frame in frames]


async def blocked_readers(stack: InProcessStack) -> int:
    """This stack's gateway connections blocked in XREAD right now (the hub's, and any reader
    of its own). Others sharing the Redis, even other tests, are not counted."""
    gateway = f"{stack.settings.namespace}:gateway"
    clients = await stack.store.redis.client_list()
    return sum(
        1
        for c in clients
        if "b" in c.get("flags", "")
        and c.get("cmd", "").startswith("xread")
        and c.get("name", "").startswith(gateway)
    )


async def finished_task(stack: InProcessStack) -> int:
    task = (await stack.client.post("/api/tasks", json={"title": "Why is the sky blue?"})).json()
    reply = await stack.client.post("/run-agents", params={"wait": 20}, json={"id": task["id"]})
    assert reply.json()["status"] == "done"
    await stack.wait_for_event(task["id"], "lock.released")
    return int(task["id"])


async def test_a_reconnect_with_last_event_id_gets_exactly_the_rest(stack: InProcessStack) -> None:
    task_id = await finished_task(stack)
    everything = await read_events(stack.client, task_id)
    assert everything[-1][1] == "lock.released"
    for k in (1, 3, len(everything) - 1):
        first = await read_events(stack.client, task_id, count=k)
        rest = await read_events(stack.client, task_id, last_id=first[-1][0])
        assert first + rest == everything


async def test_after_redis_trimmed_the_stream_the_rest_comes_from_the_archive(
    stack: InProcessStack, keys: Keys
) -> None:
    task_id = await finished_task(stack)
    everything = await read_events(stack.client, task_id)
    # the archive is written by the projector, just behind the stream: wait until it holds the
    # task's last event
    await stack.wait_for_activity(task_id, "lock.released")
    await stack.store.redis.xtrim(keys.task_events(task_id), maxlen=2, approximate=False)

    assert await read_events(stack.client, task_id, last_id="0-0") == everything
    rest = await read_events(stack.client, task_id, last_id=everything[2][0])
    assert rest == everything[3:]


async def test_live_events_reach_many_clients_through_one_reader(stack: InProcessStack) -> None:
    task = (await stack.client.post("/api/tasks", json={"title": "Why is the sky blue?"})).json()
    blocked_before = await blocked_readers(stack)
    following = [asyncio.Event() for _ in range(50)]
    readers = [
        asyncio.create_task(read_events(stack.client, task["id"], received=subscribed))
        for subscribed in following
    ]
    # every client is connected and following: each got the task's first event
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in following)), timeout=30)
    blocked_following = await blocked_readers(stack)
    await stack.client.post("/run-agents", json={"id": task["id"]})
    results = await asyncio.wait_for(asyncio.gather(*readers), timeout=30)
    assert all(frames == results[0] for frames in results)
    assert [t for _, t in results[0]][-2:] == ["run.completed", "lock.released"]
    # 50 followers did not add 50 blocked Redis readers: the process's one hub reads for all
    assert blocked_following - blocked_before <= 1


async def read_all_feed(
    client: httpx.AsyncClient,
    *,
    stop_after: int,
    last_id: str = "",
    query: str = "",
    connected: asyncio.Event | None = None,
) -> list[tuple[str, str]]:
    """(id, type) frames of GET /events until `stop_after` frames."""
    frames = await sse_frames(
        client, f"/events{query}", count=stop_after, last_id=last_id, connected=connected
    )
    return [(frame["id"], frame["event"]) for frame in frames]


async def test_the_all_tasks_feed_resumes_per_partition(stack: InProcessStack) -> None:
    first, second = await finished_task(stack), await finished_task(stack)
    assert first % stack.settings.partitions != second % stack.settings.partitions
    total = len(await stack.store.task_events(first)) + len(await stack.store.task_events(second))

    everything = await read_all_feed(stack.client, stop_after=total, query="?from=start")
    assert [t for _, t in everything].count("lock.released") == 2
    for k in (1, total // 2, total - 1):
        head = await read_all_feed(stack.client, stop_after=k, query="?from=start")
        rest = await read_all_feed(stack.client, stop_after=total - k, last_id=head[-1][0])
        assert [t for _, t in head + rest] == [t for _, t in everything]
        assert head + rest == everything


async def test_the_all_tasks_feed_starts_live_without_a_position(stack: InProcessStack) -> None:
    await finished_task(stack)
    connected = asyncio.Event()
    live = asyncio.create_task(read_all_feed(stack.client, stop_after=1, connected=connected))
    await asyncio.wait_for(connected.wait(), timeout=10)
    await stack.client.post("/api/tasks", json={"title": "new"})
    [(_, event_type)] = await asyncio.wait_for(live, timeout=10)
    assert event_type == "task.created"
    bad = await stack.client.get("/events", headers={"Last-Event-ID": "garbage"})
    assert bad.status_code == 400


async def test_a_client_resumes_on_another_gateway_after_a_restart(
    stack: InProcessStack,
) -> None:
    from msgspec.structs import replace

    from services.gateway.app import create_app
    from tests.conftest import free_port
    from tests.integration.inprocess import serving

    task_id = await finished_task(stack)
    everything = await read_events(stack.client, task_id)
    head = await read_events(stack.client, task_id, count=4)
    other = replace(stack.settings, gateway_port=free_port())  # a fresh gateway process' state
    async with (
        serving(create_app(other), other.gateway_port),
        httpx.AsyncClient(base_url=other.gateway_url, timeout=10) as client,
    ):
        rest = await read_events(client, task_id, last_id=head[-1][0])
    assert head + rest == everything
