"""The SQL `events` archive as the source of whatever Redis trimmed.

Readers read Redis first, then take from the archive what lies before the oldest entry Redis
returned (the "gap"): an entry missing from Redis at that moment was trimmed, only archived
entries are ever trimmed, so the archive, read afterwards, holds it. The other order could miss
an entry archived and trimmed between the two reads.

The readers take the archive's engine, or None when there is none to read (a debugging tool
run where no database exists): then they return what Redis holds. With `lenient=True` an entry
of a stream that is not a known event comes back as `Undecodable` instead of raising
EventDecodeError (archived events always decode: the projector decoded them).

`SqlArchive` tells the trimmer (`libs.events.retention`) how far the archive reaches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.events import EventStore, StoredEvent, decode_event
from libs.events.ids import entry_key, is_after
from libs.events.store import StoredEntry, Undecodable, decoded, holds_everything_from
from libs.readmodels.queries import archived_task_events
from libs.readmodels.schema import event_archive
from libs.readmodels.writer import load_positions

__all__ = [
    "FIRST_KEY",
    "LAST_KEY",
    "EntryKey",
    "SqlArchive",
    "format_key",
    "partition_events",
    "partition_gap",
    "task_gap",
    "task_history",
]

EntryKey = tuple[int, int]
FIRST_KEY: EntryKey = (0, 0)
LAST_KEY: EntryKey = (2**63 - 1, 2**63 - 1)  # above any real entry id, and fits SQL BIGINT


def format_key(key: EntryKey) -> str:
    return f"{key[0]}-{key[1]}"


def _type_of(entry: StoredEntry) -> str:
    if isinstance(entry, Undecodable):
        return entry.type
    return str(type(entry.event).__struct_config__.tag)


# ---------------------------------------------------------------- a task's stream


async def task_gap(
    engine: AsyncEngine,
    task_id: int,
    *,
    after: str,
    first_in_redis: str | None,
    types: frozenset[str] | None = None,
    low: EntryKey = FIRST_KEY,
    high: EntryKey = LAST_KEY,
) -> list[StoredEvent]:
    """The task's archived events after `after`, within [low, high] and before `first_in_redis`
    (the oldest entry a read of its stream in that range returned; None if it returned
    nothing), oldest first. All of them are task-stream ids."""
    return [
        stored
        for stored in await archived_task_events(engine, task_id, types=types)
        if is_after(stored.stream_id, after)
        and low <= entry_key(stored.stream_id) <= high
        and (first_in_redis is None or is_after(first_in_redis, stored.stream_id))
    ]


@overload
async def task_history(
    store: EventStore,
    engine: AsyncEngine | None,
    task_id: int,
    *,
    after: str = ...,
    low: EntryKey = ...,
    high: EntryKey = ...,
    limit: int | None = ...,
    types: frozenset[str] | None = ...,
    lenient: Literal[False] = ...,
) -> list[StoredEvent]: ...


@overload
async def task_history(
    store: EventStore,
    engine: AsyncEngine | None,
    task_id: int,
    *,
    after: str = ...,
    low: EntryKey = ...,
    high: EntryKey = ...,
    limit: int | None = ...,
    types: frozenset[str] | None = ...,
    lenient: Literal[True],
) -> list[StoredEntry]: ...


async def task_history(
    store: EventStore,
    engine: AsyncEngine | None,
    task_id: int,
    *,
    after: str = "0-0",
    low: EntryKey = FIRST_KEY,
    high: EntryKey = LAST_KEY,
    limit: int | None = None,
    types: frozenset[str] | None = None,
    lenient: bool = False,
) -> list[StoredEvent] | list[StoredEntry]:
    """The task's events after task-stream id `after` (exclusive) and within [low, high]
    (inclusive), only those of `types` if given, at most `limit` (the oldest), oldest first:
    from the archive for whatever Redis trimmed, then from the stream."""
    if limit == 0:
        return []
    in_redis = await store.task_entries(
        task_id,
        after=after,
        low=format_key(low),
        high=format_key(high),
        count=limit if types is None else None,  # with types, the limit counts what is kept
    )
    first = in_redis[0].stream_id if in_redis else None
    if types is not None:
        in_redis = [entry for entry in in_redis if _type_of(entry) in types]
    entries: list[StoredEntry] = in_redis
    start = format_key(max(entry_key(after), low))
    if engine is not None and not await holds_everything_from(
        store.redis, store.keys.task_events(task_id), start
    ):  # only then is SQL read: something in the range was trimmed
        gap = await task_gap(
            engine, task_id, after=after, first_in_redis=first, types=types, low=low, high=high
        )
        entries = [*gap, *in_redis]
    entries = entries[:limit]
    return entries if lenient else decoded(entries)


# ---------------------------------------------------------------- a partition's log


def _at_or_after(key: EntryKey) -> sa.ColumnElement[bool]:
    ms, seq = event_archive.c.log_ms, event_archive.c.log_seq
    return sa.or_(ms > key[0], sa.and_(ms == key[0], seq >= key[1]))


def _at_or_before(key: EntryKey) -> sa.ColumnElement[bool]:
    ms, seq = event_archive.c.log_ms, event_archive.c.log_seq
    return sa.or_(ms < key[0], sa.and_(ms == key[0], seq <= key[1]))


def _before(key: EntryKey) -> sa.ColumnElement[bool]:
    ms, seq = event_archive.c.log_ms, event_archive.c.log_seq
    return sa.or_(ms < key[0], sa.and_(ms == key[0], seq < key[1]))


async def partition_gap(
    engine: AsyncEngine,
    partition: int,
    redis_ids: Sequence[str],
    *,
    low: EntryKey = FIRST_KEY,
    high: EntryKey = LAST_KEY,
    limit: int | None = None,
    newest: bool = False,
) -> list[StoredEvent]:
    """The archived events a read of the partition log's range [low, high] (at most `limit`
    entries: the oldest, or with `newest` the newest) could not return because Redis trimmed
    them. `redis_ids` are the ids that read returned, oldest first. The result, oldest first,
    goes before them: `(gap + read)[:limit]` is the range's answer."""
    if newest and limit is not None and len(redis_ids) >= limit:
        return []
    want = limit if limit is None or not newest else limit - len(redis_ids)
    ms, seq = event_archive.c.log_ms, event_archive.c.log_seq
    query = sa.select(event_archive.c.log_id, event_archive.c.stream_id, event_archive.c.body)
    query = query.where(event_archive.c.partition == partition)
    query = query.where(_at_or_after(low), _at_or_before(high))
    if redis_ids:
        query = query.where(_before(entry_key(redis_ids[0])))
    query = query.order_by(ms.desc(), seq.desc()) if newest else query.order_by(ms, seq)
    if want is not None:
        query = query.limit(want)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    found = [
        StoredEvent(entry_id=row.log_id, stream_id=row.stream_id, event=decode_event(row.body))
        for row in rows
    ]
    return found[::-1] if newest else found


@overload
async def partition_events(
    store: EventStore,
    engine: AsyncEngine | None,
    partition: int,
    *,
    low: EntryKey = ...,
    high: EntryKey = ...,
    limit: int | None = ...,
    newest: bool = ...,
    lenient: Literal[False] = ...,
) -> list[StoredEvent]: ...


@overload
async def partition_events(
    store: EventStore,
    engine: AsyncEngine | None,
    partition: int,
    *,
    low: EntryKey = ...,
    high: EntryKey = ...,
    limit: int | None = ...,
    newest: bool = ...,
    lenient: Literal[True],
) -> list[StoredEntry]: ...


async def partition_events(
    store: EventStore,
    engine: AsyncEngine | None,
    partition: int,
    *,
    low: EntryKey = FIRST_KEY,
    high: EntryKey = LAST_KEY,
    limit: int | None = None,
    newest: bool = False,
    lenient: bool = False,
) -> list[StoredEvent] | list[StoredEntry]:
    """The partition log's events in [low, high], at most `limit` (the oldest, or with `newest`
    the newest), oldest first: from the archive for whatever Redis trimmed, then the log."""
    if limit == 0:
        return []
    in_redis = await store.log_entries(
        partition, format_key(low), format_key(high), count=limit, newest=newest
    )
    entries: list[StoredEntry] = in_redis
    log_key = store.keys.partition_log(partition)
    if engine is not None and not await holds_everything_from(
        store.redis, log_key, format_key(low)
    ):  # only then is SQL read: something in the range was trimmed
        redis_ids = [entry.entry_id for entry in in_redis]
        gap = await partition_gap(
            engine, partition, redis_ids, low=low, high=high, limit=limit, newest=newest
        )
        entries = [*gap, *in_redis][:limit]
    return entries if lenient else decoded(entries)


# ---------------------------------------------------------------- the trimmer's bounds


class SqlArchive:
    """How far the archive reaches (`libs.events.retention.ArchiveBounds`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def projected_positions(self) -> dict[int, str]:
        """The projector's positions: it archives a log entry in the transaction that moves
        its position past it."""
        return await load_positions(self.engine)

    async def last_archived(self, task_ids: Sequence[int]) -> dict[int, str]:
        """task id -> task-stream id of its newest archived event. A task's events are appended
        to its stream and its partition log in one step, so the newest in log order is the
        newest in stream order."""
        if not task_ids:
            return {}
        newest_first = sa.func.row_number().over(
            partition_by=event_archive.c.task_id,
            order_by=(event_archive.c.log_ms.desc(), event_archive.c.log_seq.desc()),
        )
        ranked = (
            sa.select(event_archive.c.task_id, event_archive.c.stream_id, newest_first.label("n"))
            .where(event_archive.c.task_id.in_(list(task_ids)))
            .subquery()
        )
        query = sa.select(ranked.c.task_id, ranked.c.stream_id).where(ranked.c.n == 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {int(row.task_id): str(row.stream_id) for row in rows}
