"""The consumer-group loop rides out Redis going away: its connections cut (CLIENT KILL, what a
restart, failover or network blip does), the server stopped and started again with its data,
or started again empty (its group gone: NOGROUP). No entry is lost, none is handled twice once
acked, and a reply lost with its connection does not strand the entry it delivered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from libs.events import ConsumerOptions, GroupConsumer, Keys, connect_redis
from libs.events.workers import WorkerRegistry
from tests.eventually import eventually
from tests.integration.faults import LossyProxy, OwnValkey, blocked_in, own_valkey

GROUP = "workers"


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[OwnValkey]:
    with own_valkey(tmp_path) as server:
        yield server


@pytest.fixture
async def admin(valkey: OwnValkey) -> AsyncIterator[aioredis.Redis]:
    """The test's own client: it adds entries and looks at the group."""
    client = connect_redis(valkey.url)
    yield client
    await client.aclose()


@dataclass
class Worker:
    """A GroupConsumer running in a task, recording what it handled and how often each entry
    had been delivered when it was handled."""

    redis: aioredis.Redis
    keys: Keys
    options: ConsumerOptions
    valkey: OwnValkey
    beat: bool = True
    handled: list[tuple[str, int]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.consumer = GroupConsumer(
            redis=self.redis,
            keys=self.keys,
            stream=self.keys.run_commands(0),
            group=GROUP,
            handler=self.handle,
            options=self.options,
            name="worker-1",
            registry=WorkerRegistry(self.redis, self.keys.namespace, 0.2) if self.beat else None,
            service="runner",
        )

    async def handle(self, entry_id: str, _fields: dict[str, str]) -> None:
        stream = self.keys.run_commands(0)
        [pending] = await self.redis.xpending_range(stream, GROUP, entry_id, entry_id, 1)
        self.handled.append((entry_id, int(pending["times_delivered"])))

    def start(self) -> None:
        self.task = asyncio.create_task(self.consumer.run(self.stop))

    def ids(self) -> list[str]:
        assert self.task is not None
        if self.task.done():  # it crashed: show why
            self.task.result()
            raise AssertionError("the consumer stopped")
        return [entry_id for entry_id, _ in self.handled]

    async def shut_down(self) -> None:
        self.stop.set()
        if self.valkey.server is not None:
            self.valkey.kill_clients()  # ends a long XREADGROUP block now
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
        await self.redis.aclose()


@contextlib.asynccontextmanager
async def running_worker(
    valkey: OwnValkey, keys: Keys, *, url: str = "", block_ms: int = 50, beat: bool = True
) -> AsyncIterator[Worker]:
    """A worker whose entries stay pending on it for a minute before anyone may reclaim them;
    `url` (default: the Valkey's) is where it connects."""
    client = connect_redis(url or valkey.url, socket_timeout=block_ms / 1000 + 5)
    options = ConsumerOptions(block_ms=block_ms, min_idle_ms=60_000)
    running = Worker(client, keys, options, valkey, beat)
    running.start()
    try:
        yield running
    finally:
        await running.shut_down()


@pytest.fixture
async def worker(valkey: OwnValkey, keys: Keys) -> AsyncIterator[Worker]:
    async with running_worker(valkey, keys) as running:
        yield running


async def add(admin: aioredis.Redis, keys: Keys, job: str) -> str:
    return str(await admin.xadd(keys.run_commands(0), {"job": job}))


async def cut(valkey: OwnValkey, admin: aioredis.Redis) -> int:
    """CLIENT KILL TYPE normal; the test's own client then drops its dead connections (it would
    only notice them at its next command)."""
    killed = valkey.kill_clients()
    await admin.connection_pool.disconnect()
    return killed


async def restart(
    valkey: OwnValkey, admin: aioredis.Redis, *, keep_data: bool, stopped: bool = False
) -> None:
    """Stop the Valkey (unless `stopped`) and start it again on its port, with its data or
    empty; the test's own client drops its dead connections."""
    if not stopped:
        valkey.stop()
    valkey.start(keep_data=keep_data)
    await admin.connection_pool.disconnect()


async def pending(admin: aioredis.Redis, keys: Keys) -> int:
    return int((await admin.xpending(keys.run_commands(0), GROUP))["pending"])


async def all_acked(admin: aioredis.Redis, keys: Keys) -> None:
    """Until nothing is pending: a handler's entry is acked just after it returns."""
    await eventually(lambda: pending(admin, keys), until=lambda n: n == 0, within=15)


async def handled_in_order(worker: Worker, expected: list[str]) -> None:
    await eventually(worker.ids, until=lambda ids: ids == expected, within=15)


async def test_a_consumer_keeps_handling_entries_after_client_kill(
    valkey: OwnValkey, admin: aioredis.Redis, keys: Keys
) -> None:
    async with running_worker(valkey, keys, block_ms=2000) as worker:
        await kill_while_blocked(valkey, admin, worker, keys)


async def kill_while_blocked(
    valkey: OwnValkey, admin: aioredis.Redis, worker: Worker, keys: Keys
) -> None:
    first = await add(admin, keys, "before")
    await handled_in_order(worker, [first])
    # cut while blocked in XREADGROUP (2 s): the read fails, as it does in an outage
    await eventually(lambda: blocked_in(admin, "xreadgroup"), message="consumer never blocked")
    with capture_logs() as logs:
        assert await cut(valkey, admin) >= 1
        second = await add(admin, keys, "after")
        await handled_in_order(worker, [first, second])
        await eventually(
            lambda: [e["event"] for e in logs if e["event"].startswith("consumer.redis")],
            until=lambda events: events[-1:] == ["consumer.redis_recovered"],
            message="the consumer never logged its recovery",
        )
    outage = [e["event"] for e in logs if e["event"].startswith("consumer.redis")]
    assert outage == ["consumer.redis_unavailable", "consumer.redis_recovered"]  # once each
    await all_acked(admin, keys)
    assert [deliveries for _, deliveries in worker.handled] == [1, 1]
    # its heartbeat came back too: the worker is live in the registry
    registry = WorkerRegistry(admin, keys.namespace, interval_s=0.2)
    await eventually(lambda: registry.live_workers("runner"), message="no heartbeat after")


async def test_a_consumer_rides_out_a_restart_that_keeps_the_data(
    valkey: OwnValkey, admin: aioredis.Redis, worker: Worker, keys: Keys
) -> None:
    first = await add(admin, keys, "before")
    await handled_in_order(worker, [first])
    await restart(valkey, admin, keep_data=True)
    second = await add(admin, keys, "after")
    await handled_in_order(worker, [first, second])
    await all_acked(admin, keys)
    assert [g["name"] for g in await admin.xinfo_groups(keys.run_commands(0))] == [GROUP]


async def test_a_consumer_recreates_its_group_when_redis_comes_back_empty(
    valkey: OwnValkey, admin: aioredis.Redis, worker: Worker, keys: Keys
) -> None:
    first = await add(admin, keys, "before")
    await handled_in_order(worker, [first])
    await restart(valkey, admin, keep_data=False)
    assert await admin.exists(keys.run_commands(0)) == 0  # everything is gone, the group too
    # the group is back, made by the consumer (XREADGROUP answered NOGROUP) ...
    await eventually(
        lambda: admin.exists(keys.run_commands(0)), message="the consumer never made its group"
    )
    assert [g["name"] for g in await admin.xinfo_groups(keys.run_commands(0))] == [GROUP]
    # ... from the start of the stream, so nothing added since is missed
    second = await add(admin, keys, "after")
    await handled_in_order(worker, [first, second])
    await all_acked(admin, keys)


async def test_an_entry_handled_while_redis_was_away_is_acked_once_it_is_back(
    valkey: OwnValkey, admin: aioredis.Redis, keys: Keys
) -> None:
    entered, finish = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def slow(entry_id: str, _fields: dict[str, str]) -> None:
        calls.append(entry_id)
        entered.set()
        await finish.wait()  # Redis goes away while the handler works

    client = connect_redis(valkey.url)
    consumer = GroupConsumer(
        client, keys, keys.run_commands(0), GROUP, slow, ConsumerOptions(block_ms=50), name="w"
    )
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        entry = await add(admin, keys, "slow")
        await asyncio.wait_for(entered.wait(), 10)
        valkey.stop()
        with capture_logs() as logs:
            finish.set()  # handled: the ack now fails until Redis is back, and is retried
            await eventually(
                lambda: task.done() or "consumer.ack_failed" in [e["event"] for e in logs],
                message="the ack never failed",
            )
        assert not task.done(), "the consumer stopped when its ack failed"
        await restart(valkey, admin, keep_data=True, stopped=True)
        await all_acked(admin, keys)
        later = await add(admin, keys, "later")
        await eventually(lambda: calls, until=lambda seen: later in seen, within=15)
        assert calls == [entry, later]  # the first was not handled a second time
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()


async def test_an_entry_whose_reply_was_lost_is_handled_once(
    valkey: OwnValkey, admin: aioredis.Redis, keys: Keys
) -> None:
    async with (
        LossyProxy(valkey.port) as proxy,
        # no heartbeat, 20 s blocks: the only reply on the way when it is lost is the entry's
        running_worker(valkey, keys, url=proxy.url, block_ms=20_000, beat=False) as worker,
    ):
        await eventually(lambda: blocked_in(admin, "xreadgroup"), message="never blocked")
        proxy.lose_next_reply = True
        lost = await add(admin, keys, "its reply is lost")
        # delivered to the worker (pending on it), but the worker never got the reply, and no
        # one may reclaim it for a minute (min_idle_ms): the worker re-reads its own pending
        # entries when it reconnects
        await handled_in_order(worker, [lost])
        assert proxy.replies_lost == 1
        assert worker.handled == [(lost, 2)]  # the lost delivery, then the re-read
        await all_acked(admin, keys)
        # acked: another reconnect does not bring it back
        await eventually(lambda: blocked_in(admin, "xreadgroup"), message="never blocked")
        await cut(valkey, admin)
        after = await add(admin, keys, "after")
        await handled_in_order(worker, [lost, after])
