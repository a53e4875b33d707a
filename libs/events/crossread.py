"""XREAD over streams that may sit in different hash slots (the partition logs on a cluster).

On a single server one XREAD names every stream, as before. On a cluster one XREAD may only
name streams of one slot, so a reader keeps one blocking XREAD outstanding per slot group
(`read_groups`) and returns as soon as any of them brings entries; the others stay outstanding
for the next call (a plain XREAD changes nothing on the server, so a read is reused while its
positions are still the ones asked, and dropped, cancelled, when they moved). One connection
per group is blocked at a time, and no read is issued again just because another returned.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from libs.events.redis_conn import read_groups

__all__ = ["CrossSlotReader", "Reply"]

# What XREAD returns with decode_responses=True: [(stream, [(entry id, fields), ...]), ...]
Reply = list[tuple[str, list[tuple[str, dict[str, str]]]]]


@dataclass
class _Outstanding:
    asked: dict[str, str]
    task: asyncio.Task[Any]


class CrossSlotReader:
    def __init__(self, redis: aioredis.Redis, count: int) -> None:
        self.redis = redis
        self.count = count
        self._outstanding: dict[tuple[str, ...], _Outstanding] = {}

    async def read(self, positions: Mapping[str, str], block_ms: int | None) -> Reply:
        """The entries after `positions` (stream -> last id seen), up to `count` per stream;
        with `block_ms`, waiting that long for the first to arrive ([] if none did)."""
        groups = read_groups(self.redis, positions)
        if len(groups) <= 1:
            if not groups:
                return []
            reply = await self.redis.xread(dict(positions), count=self.count, block=block_ms)  # type: ignore[arg-type]
            return cast(Reply, reply or [])
        if block_ms is None:
            await self.close()
            replies = await asyncio.gather(
                *(self._xread({s: positions[s] for s in group}, None) for group in groups)
            )
            return [item for reply in replies for item in reply]
        return await self._read_blocking(groups, positions, block_ms)

    async def _read_blocking(
        self, groups: list[list[str]], positions: Mapping[str, str], block_ms: int
    ) -> Reply:
        wanted = {tuple(group) for group in groups}
        for key in [key for key in self._outstanding if key not in wanted]:
            self._drop(key)
        deadline = time.monotonic() + block_ms / 1000
        while True:
            for group in groups:
                asked = {stream: positions[stream] for stream in group}
                key = tuple(group)
                current = self._outstanding.get(key)
                if current is not None and current.asked != asked:
                    self._drop(key)
                    current = None
                if current is None:
                    task = asyncio.create_task(self._xread(asked, block_ms))
                    self._outstanding[key] = _Outstanding(asked, task)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            tasks = {item.task: key for key, item in self._outstanding.items()}
            done, _ = await asyncio.wait(tasks, timeout=remaining, return_when="FIRST_COMPLETED")
            if not done:
                return []
            reply: Reply = []
            for task in done:
                del self._outstanding[tasks[task]]
                if task.exception() is not None:
                    await self.close()
                    raise cast(BaseException, task.exception())
                reply.extend(task.result())
            if reply:
                return reply
            # only empty replies (their BLOCK ran out): ask again until the caller's time is up

    async def _xread(self, asked: dict[str, str], block_ms: int | None) -> Reply:
        reply = await self.redis.xread(asked, count=self.count, block=block_ms)  # type: ignore[arg-type]
        return cast(Reply, reply or [])

    def _drop(self, key: tuple[str, ...]) -> None:
        self._outstanding.pop(key).task.cancel()

    async def close(self) -> None:
        """Cancel the reads still outstanding."""
        tasks = [item.task for item in self._outstanding.values()]
        self._outstanding.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
