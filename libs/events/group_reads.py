"""XREADGROUP `>` for a consumer that follows several streams, which may sit in different hash
slots (the partitions' run-command streams on a cluster), never asking for more entries than
it has free slots.

On a single server every stream is named in one XREADGROUP with `count` = the free slots, as a
one-stream consumer does. On a cluster one XREADGROUP may only name streams of one slot, so a
read is kept outstanding per slot group, each asking for a share of the free slots: the counts
asked by the outstanding reads never exceed the slots free when they were issued, so every
entry delivered can start at once (what a full consumer cannot start stays in the stream for
another member). With fewer free slots than groups, the groups take turns (rotation): a busy
consumer watches fewer partitions, an idle one all of them.

An outstanding XREADGROUP is never cancelled while the consumer runs (its reply carries entries
already delivered to this consumer); `settle` waits for them at stop and `abandon` drops them
after an error, when the consumer re-reads its own pending entries anyway.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from libs.events.crossread import Reply

__all__ = ["GroupReads"]


@dataclass
class _Read:
    count: int
    task: asyncio.Task[Any]


class GroupReads:
    def __init__(
        self, redis: aioredis.Redis, group: str, consumer: str, groups: list[list[str]]
    ) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.groups = groups
        self._outstanding: dict[int, _Read] = {}
        self._turn = 0

    @property
    def promised(self) -> int:
        """Entries the outstanding reads may still bring."""
        return sum(read.count for read in self._outstanding.values())

    async def read(self, free: int, block_ms: int | None) -> Reply:
        """Up to `free` new entries over every stream; with `block_ms`, waiting that long for
        the first ([] if none came)."""
        if len(self.groups) == 1:
            return await self._xreadgroup(self.groups[0], free, block_ms)
        if block_ms is None:
            return await self._sweep(free)
        deadline = time.monotonic() + block_ms / 1000
        while True:
            self._issue(free - self.promised, block_ms)
            remaining = deadline - time.monotonic()
            if not self._outstanding or remaining <= 0:
                return []
            tasks = {read.task: index for index, read in self._outstanding.items()}
            done, _ = await asyncio.wait(tasks, timeout=remaining, return_when="FIRST_COMPLETED")
            if not done:
                return []
            reply = self._collect(done, tasks)
            if reply:
                return reply  # else only empty replies (their BLOCK ran out): ask again

    def _issue(self, budget: int, block_ms: int) -> None:
        """Start a read on idle groups, in turn, sharing `budget` slots among them."""
        idle = [
            index
            for step in range(len(self.groups))
            if (index := (self._turn + step) % len(self.groups)) not in self._outstanding
        ]
        while budget > 0 and idle:
            index = idle.pop(0)
            count = max(budget // (len(idle) + 1), 1)
            budget -= count
            task = asyncio.create_task(self._xreadgroup(self.groups[index], count, block_ms))
            self._outstanding[index] = _Read(count, task)
            self._turn = (index + 1) % len(self.groups)

    def _collect(self, done: set[asyncio.Task[Any]], tasks: dict[asyncio.Task[Any], int]) -> Reply:
        reply: Reply = []
        failure: BaseException | None = None
        for task in done:
            del self._outstanding[tasks[task]]
            if task.exception() is not None:
                failure = task.exception()
            else:
                reply.extend(task.result())
        if failure is not None:
            raise failure  # the caller re-reads its own pending entries: `reply`'s too
        return reply

    async def _sweep(self, free: int) -> Reply:
        """One non-blocking read per group, in turn, until `free` entries came or all were
        asked."""
        reply: Reply = []
        for step in range(len(self.groups)):
            if free <= 0:
                break
            index = (self._turn + step) % len(self.groups)
            if index in self._outstanding:
                continue
            got = await self._xreadgroup(self.groups[index], free, None)
            free -= sum(len(entries) for _stream, entries in got)
            reply.extend(got)
        self._turn = (self._turn + 1) % len(self.groups)
        return reply

    async def _xreadgroup(self, streams: list[str], count: int, block_ms: int | None) -> Reply:
        reply = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            dict.fromkeys(streams, ">"),
            count=count,
            block=block_ms,
        )
        return cast(Reply, reply or [])

    async def settle(self) -> Reply:
        """Wait for the outstanding reads (each ends within its BLOCK) and return what they
        delivered; a failed one is dropped (its entries stay pending, for a live member)."""
        reads = list(self._outstanding.values())
        self._outstanding.clear()
        replies = await asyncio.gather(*(read.task for read in reads), return_exceptions=True)
        return [item for reply in replies if isinstance(reply, list) for item in reply]

    async def abandon(self) -> None:
        """Cancel the outstanding reads (after an error): what they delivered stays pending on
        this consumer, which re-reads its own pending entries next."""
        reads = list(self._outstanding.values())
        self._outstanding.clear()
        for read in reads:
            read.task.cancel()
        await asyncio.gather(*(read.task for read in reads), return_exceptions=True)
