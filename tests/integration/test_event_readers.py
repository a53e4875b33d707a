"""The history readers against a real Valkey/Redis and SQLite/PostgreSQL: entries that are not
known events come back as `Undecodable` from the `*_entries` readers (and `lenient=True`) and
raise from the others; task reads take inclusive bounds and a limit, also across what Redis
trimmed; without an archive (engine None) the readers return what Redis holds."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.events import (
    AnyEvent,
    EventDecodeError,
    EventStore,
    Keys,
    LlmDelta,
    LockAcquired,
    RunRequested,
    StoredEvent,
    TaskCreated,
)
from libs.events.ids import entry_key
from libs.events.retention import Trimmer
from libs.events.store import StoredEntry, Undecodable
from libs.readmodels import apply_batch
from libs.readmodels.archive import (
    FIRST_KEY,
    LAST_KEY,
    EntryKey,
    SqlArchive,
    partition_events,
    task_history,
)
from tests.eventually import eventually

TASK = 6  # partition 2 of 4


def events(task_id: int = TASK, n: int = 8) -> list[AnyEvent]:
    return [
        TaskCreated(task_id=task_id, title="t"),
        RunRequested(task_id=task_id, run_id="run-a", query="q"),
        LockAcquired(task_id=task_id, run_id="run-a", fence=1, ttl_ms=1000),
        *(LlmDelta(task_id=task_id, run_id="run-a", index=i, text=str(i)) for i in range(n - 3)),
    ]


def ids(entries: list[StoredEvent] | list[StoredEntry]) -> list[str]:
    return [entry.stream_id for entry in entries]


async def append_a_ms_apart(store: EventStore, batch: list[AnyEvent]) -> list[str]:
    """Append `batch`, each event in a millisecond of its own; their task-stream ids."""
    appended = []
    for event in batch:
        appended.append((await store.append(event)).stream_id)
        await asyncio.sleep(0.002)
    return appended


async def append_undecodable(redis: aioredis.Redis, keys: Keys, task_id: int) -> tuple[str, str]:
    """An entry whose data is no known event, in the task's stream and its partition log; its
    ids in both."""
    data = "{broken"
    sid: str = await redis.xadd(keys.task_events(task_id), {"type": "run.started", "data": data})
    log_id: str = await redis.xadd(
        keys.partition_log(keys.partition_of(task_id)),
        {"type": "run.started", "data": data, "task": str(task_id), "sid": sid},
    )
    return sid, log_id


async def until_redis_clock_passes(redis: aioredis.Redis) -> None:
    """With a retention of 0 s the trimmer keeps entries of the current millisecond."""

    async def now_ms() -> int:
        seconds, micros = await redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    written = await now_ms()
    await eventually(now_ms, until=lambda ms: ms > written, interval=0.001)


async def archive_and_trim(
    store: EventStore, engine: AsyncEngine, partition: int, batch: list[StoredEvent]
) -> None:
    """The projector archived `batch` (the oldest entries of the partition's log); trim."""
    await apply_batch(engine, partition, batch)
    await until_redis_clock_passes(store.redis)
    await Trimmer(store.redis, store.keys, SqlArchive(engine), retention_s=0).run_once()


# ---------------------------------------------------------------- undecodable entries


async def test_entries_readers_return_undecodable_entries_and_events_readers_raise(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    store = EventStore(redis_client, keys)
    before = await append_a_ms_apart(store, events(n=4))
    bad, bad_in_log = await append_undecodable(redis_client, keys, TASK)
    after = await append_a_ms_apart(store, events(n=4)[1:2])
    partition = keys.partition_of(TASK)

    entries = await store.task_entries(TASK)
    logged = await store.log_entries(partition, "-", "+")

    assert ids(entries) == [*before, bad, *after]
    [undecodable] = [entry for entry in entries if isinstance(entry, Undecodable)]
    assert undecodable.entry_id == undecodable.stream_id == bad
    assert (undecodable.type, undecodable.task_id) == ("run.started", TASK)
    assert undecodable.error.startswith("not a known event")
    [in_log] = [entry for entry in logged if isinstance(entry, Undecodable)]
    assert (in_log.entry_id, in_log.stream_id) == (bad_in_log, bad)
    assert (in_log.type, in_log.task_id) == ("run.started", TASK)
    with pytest.raises(EventDecodeError):
        await store.task_events(TASK)
    with pytest.raises(EventDecodeError):
        await store.log_range(partition, "-", "+")
    with pytest.raises(EventDecodeError):
        await task_history(store, None, TASK)
    assert ids(await task_history(store, None, TASK, lenient=True)) == ids(entries)
    assert await partition_events(store, None, partition, lenient=True) == logged
    # a filter by type keeps what a reader of other types never decodes
    kinds = frozenset({"task.created"})
    assert ids(await task_history(store, None, TASK, types=kinds)) == [before[0]]


async def test_follow_entries_yields_undecodable_entries_and_follow_raises(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    store = EventStore(redis_client, keys)
    stream = keys.task_events(TASK)
    await append_undecodable(redis_client, keys, TASK)
    await store.append(TaskCreated(task_id=TASK, title="t"))

    entries = store.follow_entries([stream], {stream: "0-0"}, block_ms=100)
    first, second = await anext(entries), await anext(entries)
    await entries.aclose()
    strict = store.follow([stream], {stream: "0-0"}, block_ms=100)
    with pytest.raises(EventDecodeError):
        await anext(strict)

    assert first is not None
    assert second is not None
    assert isinstance(first[1], Undecodable)
    assert first[1].task_id is None  # a task stream's entries do not name their task
    assert isinstance(second[1], StoredEvent)


# ---------------------------------------------------------------- bounds and limits


async def test_task_reads_take_inclusive_bounds_and_a_limit(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    store = EventStore(redis_client, keys)
    full = await append_a_ms_apart(store, events())

    def key(i: int) -> EntryKey:
        return entry_key(full[i])

    async def read(
        *,
        after: str = "0-0",
        low: EntryKey = FIRST_KEY,
        high: EntryKey = LAST_KEY,
        limit: int | None = None,
        types: frozenset[str] | None = None,
    ) -> list[str]:
        found = await task_history(
            store, None, TASK, after=after, low=low, high=high, limit=limit, types=types
        )
        return ids(found)

    assert await read(low=key(2), high=key(5)) == full[2:6]
    assert await read(low=key(2), limit=3) == full[2:5]
    assert await read(after=full[1], low=key(0)) == full[2:]  # the later start wins
    assert await read(after=full[3], low=key(2)) == full[4:]
    assert await read(high=key(0)) == full[:1]
    assert await read(limit=0) == []
    # with types, the limit counts the events kept
    deltas = frozenset({"llm.delta"})
    assert await read(types=deltas, limit=2) == full[3:5]
    # a bare ms as an XRANGE bound covers its whole millisecond
    ms = full[4].split("-")[0]
    assert ids(await store.task_events(TASK, low=ms, high=ms)) == [full[4]]
    assert ids(await store.task_events(TASK, after=full[4], low=ms)) == full[5:]


async def test_bounds_and_limits_hold_across_what_redis_trimmed(
    redis_client: aioredis.Redis, keys: Keys, engine: AsyncEngine
) -> None:
    store = EventStore(redis_client, keys)
    full = await append_a_ms_apart(store, events())
    partition = keys.partition_of(TASK)
    log = await store.log_range(partition, "-", "+")
    bad, _ = await append_undecodable(redis_client, keys, TASK)
    await archive_and_trim(store, engine, partition, log[:5])
    assert len(await store.task_events(TASK, high=full[-1])) == 3  # 5 of 8 went

    def key(i: int) -> EntryKey:
        return entry_key(full[i])

    async def read(
        *,
        after: str = "0-0",
        low: EntryKey = FIRST_KEY,
        high: EntryKey = LAST_KEY,
        limit: int | None = None,
    ) -> list[str]:
        found = await task_history(
            store, engine, TASK, after=after, low=low, high=high, limit=limit
        )
        return ids(found)

    assert await read(high=key(7)) == full
    assert await read(low=key(2), high=key(6)) == full[2:7]
    assert await read(low=key(1), high=key(3)) == full[1:4]  # all of it archived
    assert await read(low=key(3), limit=4) == full[3:7]
    assert await read(after=full[2], limit=2) == full[3:5]
    assert ids(await task_history(store, engine, TASK, lenient=True)) == [*full, bad]
    # without the archive: only what Redis still holds
    assert ids(await task_history(store, None, TASK, lenient=True)) == [*full[5:], bad]
    # the partition log, likewise
    lenient = await partition_events(store, engine, partition, lenient=True)
    assert [entry.entry_id for entry in lenient[:-1]] == [stored.entry_id for stored in log]
    assert isinstance(lenient[-1], Undecodable)
    newest = await partition_events(store, engine, partition, limit=4, newest=True, lenient=True)
    assert newest == lenient[-4:]
    in_redis = await partition_events(store, None, partition, lenient=True)
    assert in_redis == lenient[5:]


async def test_follow_entries_yields_what_one_read_returns_in_entry_id_order(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    store = EventStore(redis_client, keys)
    appended = []
    for event in (
        TaskCreated(task_id=2, title="two"),
        TaskCreated(task_id=3, title="three"),
        RunRequested(task_id=2, run_id="run-2"),
    ):  # a ms apart: ids of different streams tie within one ms
        appended.append(await store.append(event))
        await asyncio.sleep(0.002)
    logs = keys.partition_logs()

    follow = store.follow_entries(logs, {}, block_ms=100)  # one read returns all three
    arrivals = [await anext(follow) for _ in appended]
    await follow.aclose()

    assert [arrival[1].entry_id for arrival in arrivals if arrival] == [a.log_id for a in appended]
    assert [arrival[0] for arrival in arrivals if arrival] == [
        keys.partition_log(a.partition) for a in appended
    ]
