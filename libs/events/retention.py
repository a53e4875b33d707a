"""Bounded Redis memory: decide how far each stream may be trimmed, and trim it (XTRIM MINID).

A stream's bound is the smallest of its age cutoff (now - RAGPOC_STREAM_RETENTION_S, by the
Redis clock) and its safety bounds, each the lowest entry id that must be kept:

- a partition log keeps what lies after the projector's position for that partition: what is
  at or below it is in the SQL `events` archive, which readers fall back to;
- a task stream keeps what lies after its newest archived event. The task index (a sorted set
  per partition, filled by the append scripts, scored by the ms of a stream's oldest entry) says
  which streams to visit; a stream the trim leaves empty is dropped from it in the same step;
- a command stream keeps every group's oldest pending entry and what lies after every group's
  last-delivered id (trimming a pending entry would lose its work: XAUTOCLAIM would report it
  deleted); a stream without a group keeps everything, since a group
  created later reads it from the start;
- the docs stream is trimmed by age only. Dead-letter streams are never trimmed.

Only XTRIM MINID is used: never MAXLEN, which would trim pending entries, and never DEL, so an
emptied stream keeps its last-generated id. What the archive holds comes in through
`ArchiveBounds`, so this module needs no SQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import redis.asyncio as aioredis

from libs.events.ids import entry_key
from libs.events.names import Keys
from libs.events.redis_conn import is_cluster

__all__ = [
    "ArchiveBounds",
    "StreamTrim",
    "TrimReport",
    "Trimmer",
    "age_cutoff",
    "minid_bound",
    "next_id",
    "was_trimmed",
]

PAGE = 500
_MAX_SEQ = 2**64 - 1

# KEYS: a stream. ARGV: first id to read ('-' or '(' .. id), MINID, page size.
# -> {entries read, last id read, task ids seen (the log's `task` field), ...}: a page of what
# XTRIM MINID would remove, counted in Redis without sending the entries over.
_SCAN_BELOW = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '(' .. ARGV[2], 'COUNT', ARGV[3])
local reply = {#entries, ''}
local seen = {}
for _, entry in ipairs(entries) do
  reply[2] = entry[1]
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'task' and not seen[fields[i + 1]] then
      seen[fields[i + 1]] = true
      reply[#reply + 1] = fields[i + 1]
    end
  end
end
return reply
"""

# KEYS: task stream, task index. ARGV: MINID, task id. -> {entries removed, 1 if now empty}.
# One step with the appends (same slot): an append cannot slip between the trim and the index
# update, so a task whose stream holds entries is always in the index.
_TRIM_TASK = """
local removed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #oldest == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return {removed, 1}
end
redis.call('ZADD', KEYS[2], string.match(oldest[1][1], '^%d+'), ARGV[2])
return {removed, 0}
"""


# ---------------------------------------------------------------- bounds (pure)


def next_id(entry_id: str) -> str:
    """The smallest id after `entry_id`: the MINID that trims `entry_id` and what precedes it."""
    ms, seq = entry_key(entry_id)
    return f"{ms + 1}-0" if seq >= _MAX_SEQ else f"{ms}-{seq + 1}"


def age_cutoff(now_ms: int, retention_s: float) -> str:
    """The MINID that drops entries older than `retention_s` at `now_ms`."""
    return f"{max(0, now_ms - round(retention_s * 1000))}-0"


def minid_bound(cutoff: str, keep_from: Iterable[str]) -> str | None:
    """The MINID to trim a stream with: the smallest of the age cutoff and the safety bounds
    (each the lowest id that must be kept; `0-0` keeps everything). None when that removes
    nothing (no entry id is below 0-1)."""
    bound = min([cutoff, *keep_from], key=entry_key)
    return None if entry_key(bound) <= (0, 1) else bound


async def was_trimmed(redis: aioredis.Redis, stream: str) -> bool:
    """Whether entries were ever removed from `stream` (more added than it holds). Unknown on
    Redis < 7, which does not count the entries added: False."""
    try:
        info = await redis.xinfo_stream(stream)
    except aioredis.ResponseError as exc:
        if "no such key" not in str(exc).lower():
            raise
        return False
    added = info.get("entries-added")
    return added is not None and int(added) > int(info["length"])


# ---------------------------------------------------------------- what was trimmed


class ArchiveBounds(Protocol):
    """What the durable archive holds, i.e. what Redis may forget."""

    async def projected_positions(self) -> dict[int, str]:
        """partition -> the projector's position: every log entry at or below it is archived."""
        ...

    async def last_archived(self, task_ids: Sequence[int]) -> dict[int, str]:
        """task id -> the task-stream id of its newest archived event (absent: none is)."""
        ...


# What a trimmed stream is: a partition log, a task's stream, a command stream or the docs stream.
StreamKind = Literal["partition", "task", "commands", "docs"]


@dataclass(frozen=True, slots=True)
class StreamTrim:
    kind: StreamKind
    stream: str
    bound: str | None  # the MINID used; None when nothing may go
    removed: int  # entries removed (in a dry run: that would be)
    emptied: bool = False  # a task stream left empty and dropped from the task index


@dataclass(frozen=True, slots=True)
class TrimReport:
    cutoff: str
    dry_run: bool
    streams: tuple[StreamTrim, ...]
    tasks_visited: int

    def counts(self) -> dict[str, int]:
        """Entries removed per kind of stream, and task streams visited and emptied."""
        removed: Counter[str] = Counter()
        for trim in self.streams:
            removed[trim.kind] += trim.removed
        return {
            "partition_entries": removed["partition"],
            "task_entries": removed["task"],
            "command_entries": removed["commands"],
            "doc_entries": removed["docs"],
            "tasks_visited": self.tasks_visited,
            "task_streams_emptied": sum(1 for trim in self.streams if trim.emptied),
        }


# ---------------------------------------------------------------- trimming


class Trimmer:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        archive: ArchiveBounds,
        retention_s: float,
        *,
        partitions: Sequence[int] | None = None,
    ) -> None:
        """Trims the logs and task streams of `partitions` (every one by default); the
        command and doc streams too when partition 0 is among them, so projectors that share
        the partitions trim each stream once."""
        self.redis = redis
        self.keys = keys
        self.archive = archive
        self.retention_s = retention_s
        self.partitions = list(range(keys.partitions) if partitions is None else partitions)
        self._scan_below = redis.register_script(_SCAN_BELOW)
        self._trim_task = redis.register_script(_TRIM_TASK)

    async def run_once(self, *, dry_run: bool = False) -> TrimReport:
        """One pass over every stream; with `dry_run`, only count what would go."""
        seconds, micros = await self.redis.time()
        cutoff = age_cutoff(seconds * 1000 + micros // 1000, self.retention_s)
        trims: list[StreamTrim] = []
        visited = 0
        positions = await self.archive.projected_positions()
        for partition in self.partitions:
            log_trim, logged_tasks = await self._partition_log(
                partition, cutoff, positions.get(partition, "0-0"), dry_run
            )
            trims.append(log_trim)
            task_trims, tasks = await self._task_streams(partition, cutoff, logged_tasks, dry_run)
            trims += task_trims
            visited += tasks
        if 0 in self.partitions:
            for stream in await self._command_streams():
                keep = await self._group_bounds(stream)
                bound = minid_bound(cutoff, keep)
                trims.append(await self._trim("commands", stream, bound, dry_run))
            docs_bound = minid_bound(cutoff, [])
            trims.append(await self._trim("docs", self.keys.doc_events, docs_bound, dry_run))
        return TrimReport(cutoff, dry_run, tuple(trims), visited)

    async def _command_streams(self) -> list[str]:
        """Every partition's run commands, the ingest commands, and the run commands of
        versions before partitioning while that stream exists."""
        streams = [*self.keys.run_command_streams(), self.keys.ingest_commands]
        if await self.redis.exists(self.keys.legacy_run_commands):
            streams.append(self.keys.legacy_run_commands)
        return streams

    async def _partition_log(
        self, partition: int, cutoff: str, position: str, dry_run: bool
    ) -> tuple[StreamTrim, set[int]]:
        """Trim the log at or below the projector's position. First, the tasks of the entries
        about to go join the task index (events appended before it existed, or by an older
        version): their streams are visited by the task pass even if never indexed."""
        log_key = self.keys.partition_log(partition)
        keep = "0-0" if position == "0-0" else next_id(position)
        bound = minid_bound(cutoff, [keep])
        if bound is None:
            return StreamTrim("partition", log_key, None, 0), set()
        count, tasks = await self._scan(log_key, bound)
        if dry_run:
            return StreamTrim("partition", log_key, bound, count), tasks
        if tasks:
            await self.redis.zadd(
                self.keys.task_index(partition), dict.fromkeys(map(str, tasks), 0), nx=True
            )
        removed = await self.redis.xtrim(log_key, minid=bound, approximate=False)
        return StreamTrim("partition", log_key, bound, int(removed)), tasks

    async def _task_streams(
        self, partition: int, cutoff: str, logged_tasks: set[int], dry_run: bool
    ) -> tuple[list[StreamTrim], int]:
        """Trim every indexed task stream whose oldest entry is older than the cutoff, down to
        its newest archived event."""
        cutoff_ms = entry_key(cutoff)[0]
        members = cast(
            list[str],
            await self.redis.zrangebyscore(
                self.keys.task_index(partition), "-inf", f"({cutoff_ms}"
            ),
        )
        task_ids = sorted({int(m) for m in members} | (logged_tasks if dry_run else set()))
        trims: list[StreamTrim] = []
        for start in range(0, len(task_ids), PAGE):
            chunk = task_ids[start : start + PAGE]
            archived = await self.archive.last_archived(chunk)
            bounds = {
                task_id: minid_bound(cutoff, [next_id(archived[task_id])])
                for task_id in chunk
                if task_id in archived
            }
            trims += await self._trim_tasks(partition, bounds, dry_run)
        return trims, len(task_ids)

    async def _trim_tasks(
        self, partition: int, bounds: dict[int, str | None], dry_run: bool
    ) -> list[StreamTrim]:
        chosen = {task_id: bound for task_id, bound in bounds.items() if bound is not None}
        if dry_run:
            trims = []
            for task_id, bound in chosen.items():
                stream = self.keys.task_events(task_id)
                count, _ = await self._scan(stream, bound)
                emptied = count > 0 and count == await self.redis.xlen(stream)
                trims.append(StreamTrim("task", stream, bound, count, emptied))
            return trims
        index = self.keys.task_index(partition)
        calls: list[tuple[list[str], list[str | int]]] = [
            ([self.keys.task_events(task_id), index], [bound, task_id])
            for task_id, bound in chosen.items()
        ]
        if is_cluster(self.redis):  # a cluster pipeline refuses EVALSHA: one call each
            replies = [
                cast(list[int], await self._trim_task(keys=keys, args=args)) for keys, args in calls
            ]
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    await self._trim_task(keys=keys, args=args, client=pipe)
                replies = cast(list[list[int]], await pipe.execute())
        return [
            StreamTrim("task", self.keys.task_events(task_id), bound, int(removed), bool(empty))
            for (task_id, bound), (removed, empty) in zip(chosen.items(), replies, strict=True)
        ]

    async def _group_bounds(self, stream: str) -> list[str]:
        """What a command stream must keep: every group's oldest pending entry and what lies
        after its last-delivered id; everything (`0-0`) when it has no group or no stream."""
        try:
            groups: list[dict[str, Any]] = await self.redis.xinfo_groups(stream)
        except aioredis.ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            return ["0-0"]
        if not groups:
            return ["0-0"]
        keep = []
        for group in groups:
            delivered = str(group["last-delivered-id"])
            keep.append("0-0" if delivered == "0-0" else next_id(delivered))
            if int(group["pending"]) > 0:
                summary = await self.redis.xpending(stream, group["name"])
                if summary["pending"]:
                    keep.append(str(summary["min"]))
        return keep

    async def _trim(
        self, kind: StreamKind, stream: str, bound: str | None, dry_run: bool
    ) -> StreamTrim:
        if bound is None:
            return StreamTrim(kind, stream, None, 0)
        if dry_run:
            count, _ = await self._scan(stream, bound)
            return StreamTrim(kind, stream, bound, count)
        removed = await self.redis.xtrim(stream, minid=bound, approximate=False)
        return StreamTrim(kind, stream, bound, int(removed))

    async def _scan(self, stream: str, bound: str) -> tuple[int, set[int]]:
        """How many entries lie below `bound`, and the task ids they carry (partition logs)."""
        start, total, tasks = "-", 0, set[int]()
        while True:
            reply = await self._scan_below(keys=[stream], args=[start, bound, PAGE])
            count, last, *seen = cast(list[Any], reply)
            total += int(count)
            tasks.update(int(task) for task in seen)
            if int(count) < PAGE:
                return total, tasks
            start = f"({last}"
