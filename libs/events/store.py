"""Append events to a task's stream and its partition log in one step; read them back.

An event is appended by one Lua script to both the task's stream (what SSE replays) and the
partition log (what the projector follows), and the task is added to its partition's task index
(what the trimmer visits). All keys share the partition's hash tag. When a lock key and token
are given the script first checks that the caller still holds the task's lock, so a paused
"zombie" runner's events never reach the log.

Every reader comes in two kinds: `*_entries` return an entry that is not a known event as an
`Undecodable` (for tools that show a stream as it is), `*_events` (and `log_range`, `follow`)
raise EventDecodeError at it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from libs.events.codec import AnyEvent, decode_event, encode
from libs.events.crossread import CrossSlotReader
from libs.events.errors import EventDecodeError, LockNotHeld, RunAlreadyEnded
from libs.events.ids import entry_key
from libs.events.names import Keys
from libs.events.redis_conn import connect_redis

# Stream entries as redis-py returns them with decode_responses=True.
Entries = list[tuple[str, dict[str, str]]]

__all__ = [
    "Appended",
    "Entries",
    "EventStore",
    "LockNotHeld",
    "StoredEntry",
    "StoredEvent",
    "Undecodable",
    "connect_redis",
    "decoded",
    "holds_everything_from",
    "last_generated_id",
]

# Every append script: KEYS task stream, partition log, task index[, lock, ...];
# ARGV type, data, task_id[, lock token]. With a lock key, nothing happens unless the token
# still holds it. ZADD NX: the task's score stays the ms of its oldest untrimmed entry (the
# trimmer moves it).
_CHECK_LOCK = """
if KEYS[4] ~= nil and redis.call('GET', KEYS[4]) ~= ARGV[4] then
  return redis.error_reply('LOCKLOST task lock is no longer held by this run')
end
"""
_APPEND_BOTH = """
local id = redis.call('XADD', KEYS[1], '*', 'type', ARGV[1], 'data', ARGV[2])
local log_id = redis.call('XADD', KEYS[2], '*', 'type', ARGV[1], 'data', ARGV[2],
  'task', ARGV[3], 'sid', id)
redis.call('ZADD', KEYS[3], 'NX', string.match(id, '^%d+'), ARGV[3])
"""
_APPEND = _CHECK_LOCK + _APPEND_BOTH + "return {id, log_id}\n"

# The run's outcome marker (KEYS[5] under a lock, else KEYS[4]). A run's terminal event and its
# marker are written in one step, and only while the marker is not set: a run ends exactly once,
# so a redelivered command can tell that its run already ended, and a writer may retry a
# terminal append whose reply was lost without ending the run twice.
_ENDED_ONCE = """
if redis.call('EXISTS', KEYS[{marker}]) == 1 then
  local ended = redis.call('GET', KEYS[{marker}])
  return redis.error_reply('ENDED the run has already ended with ' .. ended)
end
"""
_SET_MARKER = "redis.call('SET', KEYS[{marker}], ARGV[1], 'EX', 604800)\nreturn {{id, log_id}}\n"
_APPEND_OUTCOME = (
    _CHECK_LOCK + _ENDED_ONCE.format(marker=5) + _APPEND_BOTH + _SET_MARKER.format(marker=5)
)
_APPEND_OUTCOME_UNLOCKED = (
    _ENDED_ONCE.format(marker=4) + _APPEND_BOTH + _SET_MARKER.format(marker=4)
)

# `lock.released` and the release itself in one step: once the event is in the log the task is
# free, so a client that saw it can start the next run at once.
_APPEND_RELEASE = _CHECK_LOCK + _APPEND_BOTH + "redis.call('DEL', KEYS[4])\nreturn {id, log_id}\n"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as read from a stream. `entry_id` is the id in the stream it was read from;
    `stream_id` is always the id in the task's own stream (what SSE clients see)."""

    entry_id: str
    stream_id: str
    event: AnyEvent


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A stream entry that is not a known event (damaged, or written by hand or by a newer
    version): what its fields say and why it did not decode. The `*_entries` readers return it
    where the `*_events` readers raise EventDecodeError. `type` is its `type` field ("" when it
    has none); `task_id` its `task` field, or the task whose stream was read (None when
    neither says)."""

    entry_id: str
    stream_id: str
    type: str
    task_id: int | None
    error: str


# What the `*_entries` readers return for each entry.
StoredEntry: TypeAlias = StoredEvent | Undecodable


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an appended event landed: its id in the task's stream and in the partition log."""

    stream_id: str
    log_id: str
    partition: int


async def _stream_info(redis: aioredis.Redis, stream: str) -> dict[str, Any] | None:
    """XINFO STREAM, or None when the stream does not exist."""
    try:
        info: dict[str, Any] = await redis.xinfo_stream(stream)
    except aioredis.ResponseError as exc:
        if "no such key" not in str(exc).lower():
            raise
        return None
    return info


async def last_generated_id(redis: aioredis.Redis, stream: str) -> str:
    """The id of the newest entry the stream ever had (`0-0` if it does not exist). Unlike
    XREVRANGE this survives trimming: an emptied stream still knows where it stands."""
    info = await _stream_info(redis, stream)
    return "0-0" if info is None else str(info["last-generated-id"])


async def holds_everything_from(redis: aioredis.Redis, stream: str, low: str) -> bool:
    """Whether the stream still holds every entry it ever had with an id at or after `low`:
    nothing was ever trimmed from it, or its oldest entry is at or before `low`. Asked after a
    read of the stream, it answers for that read too (trimming only moves forward). False for
    a stream that does not exist: its history, if any, is elsewhere."""
    info = await _stream_info(redis, stream)
    if info is None:
        return False
    added = info.get("entries-added")  # Redis >= 7
    if added is not None and int(added) == int(info["length"]):
        return True
    first = info.get("first-entry")
    return first is not None and entry_key(first[0]) <= entry_key(low)


def _read_entry(entry_id: str, fields: dict[str, str], task_id: int | None = None) -> StoredEntry:
    stream_id = fields.get("sid", entry_id)
    try:
        event = decode_event(fields.get("data", ""))
    except EventDecodeError as exc:
        task = fields.get("task", "")
        if task.isdigit():
            task_id = int(task)
        return Undecodable(entry_id, stream_id, fields.get("type", ""), task_id, str(exc))
    return StoredEvent(entry_id=entry_id, stream_id=stream_id, event=event)


def _event_of(entry: StoredEntry) -> StoredEvent:
    if isinstance(entry, Undecodable):
        raise EventDecodeError(entry.error)
    return entry


def decoded(entries: Sequence[StoredEntry]) -> list[StoredEvent]:
    """`entries` as events; raises EventDecodeError at the first that is not one."""
    return [_event_of(entry) for entry in entries]


def _range_start(after: str, low: str) -> str:
    """The XRANGE start of the entries after `after` (exclusive; "-", "", "0" or "0-0" for
    none) and at or after `low` (inclusive, "-" for none; a bare ms means its seq 0)."""
    if after in ("-", "0", "0-0", ""):
        return low
    if low != "-" and entry_key(low) > entry_key(after):
        return low
    return f"({after}"


class EventStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._append = redis.register_script(_APPEND)
        self._append_outcome = redis.register_script(_APPEND_OUTCOME)
        self._append_outcome_unlocked = redis.register_script(_APPEND_OUTCOME_UNLOCKED)
        self._append_release = redis.register_script(_APPEND_RELEASE)

    async def append(self, event: AnyEvent, *, lock_token: str | None = None) -> Appended:
        """Append `event` to its task's stream and partition log in one step; with a lock
        token, only while that token still holds the task's lock."""
        extra_keys = [] if lock_token is None else [self.keys.task_lock(event.task_id)]
        extra_args = [] if lock_token is None else [lock_token]
        return await self._run_append(self._append, event, extra_keys, extra_args)

    async def append_outcome(self, event: AnyEvent, *, lock_token: str | None) -> Appended:
        """Append a run's terminal event and mark the run as ended, in one step: under its lock
        (`lock_token`; None for a writer that holds none, such as a report about a run whose
        task another run has taken), and only if the run has not ended yet (else
        `RunAlreadyEnded`, nothing written). Safe to retry after a lost reply."""
        marker = self.keys.run_outcome(event.task_id, event.run_id)
        if lock_token is None:
            return await self._run_append(self._append_outcome_unlocked, event, [marker], [])
        extra_keys = [self.keys.task_lock(event.task_id), marker]
        return await self._run_append(self._append_outcome, event, extra_keys, [lock_token])

    async def append_release(self, event: AnyEvent, *, lock_token: str) -> Appended:
        """Append `lock.released` and delete the lock (compare-and-delete) in one step."""
        lock = [self.keys.task_lock(event.task_id)]
        return await self._run_append(self._append_release, event, lock, [lock_token])

    async def _run_append(
        self, script: AsyncScript, event: AnyEvent, extra_keys: list[str], extra_args: list[str]
    ) -> Appended:
        task_id = event.task_id
        partition = self.keys.partition_of(task_id)
        keys = [
            self.keys.task_events(task_id),
            self.keys.partition_log(partition),
            self.keys.task_index(partition),
            *extra_keys,
        ]
        tag = type(event).__struct_config__.tag or ""
        args: list[str | int] = [tag, encode(event).decode(), task_id, *extra_args]
        try:
            stream_id, log_id = await script(keys=keys, args=args)
        except aioredis.ResponseError as exc:
            if "LOCKLOST" in str(exc):
                raise LockNotHeld(str(exc)) from exc
            if str(exc).startswith("ENDED"):
                raise RunAlreadyEnded(str(exc).removeprefix("ENDED ")) from exc
            raise
        return Appended(stream_id=stream_id, log_id=log_id, partition=partition)

    async def run_outcome(self, task_id: int, run_id: str) -> str | None:
        """The type of the run's terminal event, if it has ended."""
        outcome = await self.redis.get(self.keys.run_outcome(task_id, run_id))
        return cast(str | None, outcome)

    async def task_entries(
        self,
        task_id: int,
        *,
        after: str = "-",
        low: str = "-",
        high: str = "+",
        count: int | None = None,
    ) -> list[StoredEntry]:
        """The task's entries after entry id `after` (exclusive) and within [low, high]
        (inclusive; a bare ms covers its whole millisecond), oldest first, at most `count`. An
        entry that is not a known event comes back as Undecodable."""
        stream = self.keys.task_events(task_id)
        start = _range_start(after, low)
        entries = cast(Entries, await self.redis.xrange(stream, start, high, count=count))
        return [_read_entry(entry_id, fields, task_id) for entry_id, fields in entries]

    async def task_events(
        self,
        task_id: int,
        *,
        after: str = "-",
        low: str = "-",
        high: str = "+",
        count: int | None = None,
    ) -> list[StoredEvent]:
        """`task_entries`, raising EventDecodeError at an entry that is not a known event."""
        entries = await self.task_entries(task_id, after=after, low=low, high=high, count=count)
        return decoded(entries)

    async def log_entries(
        self, partition: int, low: str, high: str, *, count: int | None = None, newest: bool = False
    ) -> list[StoredEntry]:
        """The partition log's entries with ids in [low, high], oldest first; with `count`, the
        first `count` of them, or the last `count` when `newest`. An entry that is not a known
        event comes back as Undecodable."""
        log_key = self.keys.partition_log(partition)
        if newest:
            reply = await self.redis.xrevrange(log_key, high, low, count=count)
            entries = list(reversed(cast(Entries, reply)))
        else:
            entries = cast(Entries, await self.redis.xrange(log_key, low, high, count=count))
        return [_read_entry(entry_id, fields) for entry_id, fields in entries]

    async def log_range(
        self, partition: int, low: str, high: str, *, count: int | None = None, newest: bool = False
    ) -> list[StoredEvent]:
        """`log_entries`, raising EventDecodeError at an entry that is not a known event."""
        return decoded(await self.log_entries(partition, low, high, count=count, newest=newest))

    async def follow_entries(
        self, streams: Sequence[str], after: dict[str, str], *, block_ms: int = 1000
    ) -> AsyncGenerator[tuple[str, StoredEntry] | None, None]:
        """Yield (stream, entry) as entries arrive after the given ids, and None each time a
        read waited `block_ms` with nothing new (callers use it for heartbeats); forever. The
        entries one read returns from several streams come in entry-id order. An entry that is
        not a known event comes as Undecodable."""
        positions = {stream: after.get(stream, "0-0") for stream in streams}
        reader = CrossSlotReader(self.redis, count=100)
        try:
            while True:
                reply = await reader.read(positions, block_ms)
                if not reply:
                    yield None
                    continue
                arrived = [
                    (entry_key(entry_id), stream, entry_id, fields)
                    for stream, entries in reply
                    for entry_id, fields in entries
                ]
                arrived.sort(key=lambda arrival: arrival[0])  # stable: a stream's order stays
                for _, stream, entry_id, fields in arrived:
                    positions[stream] = entry_id
                    yield stream, _read_entry(entry_id, fields)
        finally:
            await reader.close()

    async def follow(
        self, streams: Sequence[str], after: dict[str, str], *, block_ms: int = 1000
    ) -> AsyncGenerator[tuple[str, StoredEvent] | None, None]:
        """`follow_entries`, raising EventDecodeError at an entry that is not a known event."""
        async with aclosing(self.follow_entries(streams, after, block_ms=block_ms)) as entries:
            async for item in entries:
                yield None if item is None else (item[0], _event_of(item[1]))
