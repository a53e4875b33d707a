"""The consumer-group loop every command consumer runs.

- creates its group idempotently (`XGROUP CREATE … MKSTREAM`, swallowing only BUSYGROUP);
- acks an entry only after its handler returned (at-least-once; handlers are idempotent);
- keeps the claim on the entry in hand fresh while the handler works, so `XAUTOCLAIM` by another
  member never hands a live entry to a second consumer while its handler still works;
- reclaims entries left pending by a dead consumer once idle longer than `min_idle_ms`;
- moves an entry delivered more than `max_deliveries` times to a dead-letter stream with the
  last error as its reason;
- on stop, finishes the entry in hand and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import msgspec
import redis.asyncio as aioredis
import structlog

from libs.common.settings import Settings
from libs.events.names import Keys
from libs.events.redis_typing import awaitable
from libs.events.store import Entries
from libs.events.workers import WorkerInfo, WorkerRegistry

__all__ = ["ConsumerOptions", "DeadLetterHook", "GroupConsumer", "Handler", "consumer_name"]

log = structlog.get_logger(__name__)

Handler = Callable[[str, dict[str, str]], Awaitable[None]]
DeadLetterHook = Callable[[str, dict[str, str], str], Awaitable[None]]

_TOUCH_IF_OWNED = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 1 and p[1][2] == ARGV[3] then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
  return 1
end
return 0
"""


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    block_ms: int = 1000
    min_idle_ms: int = 30_000
    max_deliveries: int = 5
    count: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsumerOptions:
        """The RAGPOC_CONSUMER_* settings."""
        return cls(
            block_ms=settings.consumer_block_ms,
            min_idle_ms=settings.consumer_min_idle_ms,
            max_deliveries=settings.consumer_max_deliveries,
        )


@dataclass
class GroupConsumer:
    redis: aioredis.Redis
    keys: Keys
    stream: str
    group: str
    handler: Handler
    options: ConsumerOptions = field(default_factory=ConsumerOptions)
    name: str = field(default_factory=consumer_name)
    on_dead_letter: DeadLetterHook | None = None
    # optional heartbeat into the worker registry (`GET /api/jobs`); `service` defaults to group
    registry: WorkerRegistry | None = None
    service: str = ""
    current_entry: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._touch = self.redis.register_script(_TOUCH_IF_OWNED)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event | None = None, *, burst: bool = False) -> None:
        """Consume until `stop` is set, or (burst) until nothing is left to do right now."""
        stop = stop or asyncio.Event()
        await self.ensure_group()
        log.info("consumer.started", stream=self.stream, group=self.group, consumer=self.name)
        beating = asyncio.Event()
        beat = None
        if self.registry is not None:
            beat = asyncio.create_task(self._heartbeat(self.registry, beating))
        try:
            while not stop.is_set():
                handled = await self.process_once(stop, block=not burst)
                if burst and handled == 0:
                    break
        finally:
            if beat is not None:
                beating.set()
                await beat  # ends by itself once `beating` is set: no cancel(), see _keep_claim
        log.info("consumer.stopped", stream=self.stream, group=self.group, consumer=self.name)

    async def process_once(self, stop: asyncio.Event | None = None, *, block: bool = True) -> int:
        """Reclaim idle entries, then read new ones; returns how many entries were processed."""
        stop = stop or asyncio.Event()
        done = await self._reclaim(stop)
        if stop.is_set():
            return done
        reply = await self.redis.xreadgroup(
            self.group,
            self.name,
            {self.stream: ">"},
            count=self.options.count,
            block=self.options.block_ms if block and done == 0 else None,
        )
        for _stream, entries in cast(list[tuple[str, Entries]], reply or []):
            for entry_id, fields in entries:
                await self._handle(entry_id, fields)
                done += 1
                if stop.is_set():
                    return done
        return done

    async def _reclaim(self, stop: asyncio.Event) -> int:
        reply = await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.name,
            min_idle_time=self.options.min_idle_ms,
            start_id="0-0",
            count=self.options.count,
        )
        _cursor, entries, deleted = cast(tuple[str, Entries, list[str]], reply)
        for entry_id in deleted:
            log.warning("consumer.entry_trimmed", stream=self.stream, entry_id=entry_id)
        done = 0
        for entry_id, fields in entries:
            if fields is None:  # deleted between claim and read
                continue
            deliveries = await self._deliveries(entry_id)
            if deliveries > self.options.max_deliveries:
                await self._dead_letter(entry_id, fields, deliveries)
            else:
                log.info("consumer.reclaimed", entry_id=entry_id, deliveries=deliveries)
                await self._handle(entry_id, fields)
            done += 1
            if stop.is_set():
                break
        return done

    async def _deliveries(self, entry_id: str) -> int:
        pending = await self.redis.xpending_range(
            self.stream, self.group, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 0

    async def _handle(self, entry_id: str, fields: dict[str, str]) -> None:
        self.current_entry = entry_id
        handled = asyncio.Event()
        keep_claim = asyncio.create_task(self._keep_claim(entry_id, handled))
        try:
            with structlog.contextvars.bound_contextvars(msg_id=entry_id, stream=self.stream):
                try:
                    await self.handler(entry_id, fields)
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    log.exception("consumer.handler_failed", reason=reason)
                    errors_key = self.keys.delivery_errors(self.stream, self.group)
                    await awaitable(self.redis.hset(errors_key, entry_id, reason))
                    return
        finally:
            handled.set()
            await keep_claim  # ends by itself once `handled` is set: no cancel(), see below
            self.current_entry = None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, self.group, entry_id)
            pipe.hdel(self.keys.delivery_errors(self.stream, self.group), entry_id)
            await pipe.execute()

    async def _keep_claim(self, entry_id: str, handled: asyncio.Event) -> None:
        """Touch the entry every min_idle/3 until `handled` is set. Stopped by the event, not
        by cancel(): a cancel landing inside a redis-py command is sometimes swallowed, and the
        task then touched the entry forever, so a failed entry was never reclaimed nor
        dead-lettered (and its connection outlived the client)."""
        interval = max(self.options.min_idle_ms / 3000, 0.05)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handled.wait(), interval)
            if handled.is_set():
                return
            try:
                await self._touch(keys=[self.stream], args=[self.group, entry_id, self.name])
            except aioredis.RedisError as exc:
                log.warning("consumer.keep_claim_failed", entry_id=entry_id, error=str(exc))

    async def _heartbeat(self, registry: WorkerRegistry, done: asyncio.Event) -> None:
        """Publish this worker (and the entry in hand) every `registry.interval_s` until `done`
        is set, then remove its record. Registry errors are logged, never raised."""
        info = WorkerInfo(
            id=self.name,
            service=self.service or self.group,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=time.time(),
        )
        while not done.is_set():
            try:
                await registry.heartbeat(
                    msgspec.structs.replace(info, current_entry=self.current_entry)
                )
            except aioredis.RedisError as exc:
                log.warning("consumer.heartbeat_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), registry.interval_s)
        try:
            await registry.remove(info)
        except aioredis.RedisError as exc:
            log.warning("consumer.unregister_failed", error=str(exc))

    async def _dead_letter(self, entry_id: str, fields: dict[str, str], deliveries: int) -> None:
        errors_key = self.keys.delivery_errors(self.stream, self.group)
        last_error = cast(str | None, await awaitable(self.redis.hget(errors_key, entry_id)))
        reason = last_error or f"consumer died or timed out on all {deliveries - 1} deliveries"
        dead = {**fields, "source_id": entry_id, "group": self.group}
        dead |= {"deliveries": str(deliveries - 1), "reason": reason}
        await self.redis.xadd(self.keys.dead_letters(self.stream), dead)  # type: ignore[arg-type]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, self.group, entry_id)
            pipe.hdel(errors_key, entry_id)
            await pipe.execute()
        log.error("consumer.dead_lettered", entry_id=entry_id, reason=reason)
        if self.on_dead_letter is not None:
            await self.on_dead_letter(entry_id, fields, reason)
