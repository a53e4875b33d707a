"""The consumer-group loop every command consumer runs, over one stream or several (a runner
follows every partition's run-command stream; `libs.events.group_reads` reads them).

- creates its group idempotently (`XGROUP CREATE … MKSTREAM`, swallowing only BUSYGROUP);
- acks an entry only after its handler returned (at-least-once; handlers are idempotent);
- handles up to `concurrency` entries at once, each in its own task, and reads only as many as
  it has free slots (`libs.events.inhand`); on stop it reads no more and lets the entries in
  hand finish for up to `drain_s`, leaving what is still running pending for another member;
- keeps the claim on the entry in hand fresh while the handler works, so `XAUTOCLAIM` by another
  member never hands a live entry to a second consumer while its handler still works;
- reclaims entries left pending by a dead consumer once idle longer than `min_idle_ms` (it looks
  every min(min_idle_ms / 4, block_ms), not on every read: sooner finds nothing to take);
- moves an entry delivered more than `max_deliveries` times to a dead-letter stream with the
  last error as its reason;
- rides out Redis going away (restart, failover, network blip, CLIENT KILL): a transient Redis
  error is retried with capped, jittered backoff (`libs.common.backoff`), logged once per
  outage, and never ends the loop. After it, the consumer first re-reads its own pending entries
  (XREADGROUP from "0": a reply lost with the connection left them pending here, where no one
  would reclaim them before `min_idle_ms`), and recreates its group if the server came back
  without it (NOGROUP). An entry whose handler succeeded is acked with retries, so it is not
  handled again after the outage.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from libs.common.backoff import Backoff, FailureStreak, is_nogroup, is_transient, pause
from libs.events.claim_keeper import ClaimKeeper
from libs.events.consumer_options import ConsumerOptions, consumer_name
from libs.events.group_reads import GroupReads
from libs.events.inhand import InHand
from libs.events.names import Keys
from libs.events.redis_conn import read_groups
from libs.events.redis_typing import awaitable
from libs.events.store import Entries
from libs.events.workers import WorkerInfo, WorkerRegistry, heartbeat_until

__all__ = ["ConsumerOptions", "DeadLetterHook", "GroupConsumer", "Handler", "consumer_name"]

log = structlog.get_logger(__name__)

Handler = Callable[[str, dict[str, str]], Awaitable[None]]
DeadLetterHook = Callable[[str, dict[str, str], str], Awaitable[None]]


@dataclass
class GroupConsumer:
    redis: aioredis.Redis
    keys: Keys
    stream: str | Sequence[str]  # one stream, or several consumed as one
    group: str
    handler: Handler
    options: ConsumerOptions = field(default_factory=ConsumerOptions)
    name: str = field(default_factory=consumer_name)
    on_dead_letter: DeadLetterHook | None = None
    # optional heartbeat into the worker registry (`GET /api/jobs`); `service` defaults to group
    registry: WorkerRegistry | None = None
    service: str = ""
    # streams read only while they exist (an earlier version's): never created, dropped once gone
    fading: frozenset[str] = frozenset()
    in_hand: InHand = field(init=False)
    # what the next step does first: create the group (at start, after NOGROUP), re-read this
    # consumer's own pending entries (at start, after a Redis error)
    _group_ready: bool = field(default=False, init=False, repr=False)
    _own_unchecked: bool = field(default=True, init=False, repr=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _reclaim_at: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._claims = ClaimKeeper(self.redis, self.group, self.name, self.options.min_idle_ms)
        self.in_hand = InHand(self.options.concurrency)
        self._follow([self.stream] if isinstance(self.stream, str) else list(self.stream))

    def _follow(self, streams: list[str]) -> None:
        self.streams = streams
        groups = read_groups(self.redis, self.streams)
        self._reads = GroupReads(self.redis, self.group, self.name, groups)
        self._label = self.streams[0] if len(self.streams) == 1 else f"{len(self.streams)} streams"

    async def ensure_group(self) -> None:
        gone = []
        for stream in self.streams:
            fading = stream in self.fading
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=not fading)
            except aioredis.ResponseError as exc:
                if fading and "BUSYGROUP" not in str(exc):  # the key is gone: so is the stream
                    gone.append(stream)
                elif "BUSYGROUP" not in str(exc):
                    raise
        if gone:
            log.info("consumer.stream_gone", streams=gone, group=self.group)
            self._follow([stream for stream in self.streams if stream not in gone])
        self._group_ready = True

    async def run(self, stop: asyncio.Event | None = None, *, burst: bool = False) -> None:
        """Consume until `stop` is set, or (burst) until nothing is left to do right now.
        Transient Redis errors are retried with backoff, never raised."""
        stop = stop or asyncio.Event()
        log.info("consumer.started", stream=self._label, group=self.group, consumer=self.name)
        beating = asyncio.Event()
        beat = None
        if self.registry is not None:
            me = WorkerInfo(
                id=self.name,
                service=self.service or self.group,
                host=socket.gethostname(),
                pid=os.getpid(),
                started_at=time.time(),
                slots=self.options.concurrency,
            )
            beat = asyncio.create_task(
                heartbeat_until(self.registry, me, lambda: self.in_hand.ids, beating)
            )
        backoff = Backoff()
        streak = FailureStreak(
            log,
            "consumer.redis_unavailable",
            "consumer.redis_recovered",
            stream=self._label,
            group=self.group,
            consumer=self.name,
        )
        try:
            while not stop.is_set():
                try:
                    handled = await self.process_once(stop, block=not burst)
                except RedisError as exc:
                    if not is_transient(exc):
                        raise
                    self._own_unchecked = True  # a reply may have been lost with the connection
                    await self._reads.abandon()
                    if is_nogroup(exc):  # the server came back empty
                        self._group_ready = False
                    await pause(stop, streak.failed(exc, backoff.next_delay()))
                    continue
                if streak.recovered():
                    backoff.reset()
                if burst and handled == 0:
                    break
        finally:  # stopped: the entries in hand may finish; cancelled: they stop too
            if stop.is_set():  # what the outstanding reads delivered is handled, not stranded
                for stream, entry_id, fields in _entries(await self._reads.settle()):
                    await self._dispatch(stream, entry_id, fields)
            else:
                await self._reads.abandon()
            await self.in_hand.drain(self.options.drain_s if stop.is_set() else 0)
            if beat is not None:
                beating.set()
                await beat  # ends by itself once `beating` is set: no cancel(), see ClaimKeeper
        log.info("consumer.stopped", stream=self._label, group=self.group, consumer=self.name)

    async def process_once(self, stop: asyncio.Event | None = None, *, block: bool = True) -> int:
        """Create the group if needed; re-read this consumer's own pending entries if needed;
        reclaim idle entries, then read new ones. Returns how many entries were processed."""
        stop = self._stop = stop or asyncio.Event()
        if not self._group_ready:
            await self.ensure_group()
        await self.in_hand.wait_for_slot(stop)
        done = 0
        if self._own_unchecked and not stop.is_set():
            done = await self._own_pending(stop)
            self._own_unchecked = False
        if not stop.is_set() and self._unpromised and time.monotonic() >= self._reclaim_at:
            interval_ms = min(self.options.min_idle_ms / 4, self.options.block_ms)
            self._reclaim_at = time.monotonic() + interval_ms / 1000
            for stream in self.streams:
                done += await self._reclaim(stream, stop)
        if stop.is_set() or not self.in_hand.free:
            return done
        # no more than it can start: the rest is for other members
        reply = await self._reads.read(
            self.in_hand.free, self.options.block_ms if block and done == 0 else None
        )
        for stream, entry_id, fields in _entries(reply):
            await self._dispatch(stream, entry_id, fields)
            done += 1
        return done

    @property
    def _unpromised(self) -> int:
        """Free slots no outstanding read may fill."""
        return max(self.in_hand.free - self._reads.promised, 0)

    async def _dispatch(self, stream: str, entry_id: str, fields: dict[str, str]) -> None:
        """Start handling the entry once a slot is free; with one slot, handle it to the end."""
        await self.in_hand.wait_for_slot(asyncio.Event())
        task = self.in_hand.start(stream, entry_id, self._handle(stream, entry_id, fields))
        if self.options.concurrency == 1:
            try:
                await task
            except asyncio.CancelledError:
                task.cancel()
                raise

    async def _reclaim(self, stream: str, stop: asyncio.Event) -> int:
        if not self._unpromised:
            return 0
        reply = await self.redis.xautoclaim(
            stream,
            self.group,
            self.name,
            min_idle_time=self.options.min_idle_ms,
            start_id="0-0",
            count=self._unpromised,
        )
        _cursor, entries, deleted = cast(tuple[str, Entries, list[str]], reply)
        for entry_id in deleted:
            log.warning("consumer.entry_trimmed", stream=stream, entry_id=entry_id)
        done = 0
        for entry_id, fields in entries:
            if fields is None or (stream, entry_id) in self.in_hand:  # deleted, or ours already
                continue
            await self._redeliver(stream, entry_id, fields, "consumer.reclaimed")
            done += 1
            if stop.is_set():
                break
        return done

    async def _own_pending(self, stop: asyncio.Event) -> int:
        """Handle the entries delivered to this consumer and never acked, once each, oldest
        first. Each read from an id returns the next pending one (and counts a delivery)."""
        done = 0
        for stream in self.streams:
            done += await self._own_pending_in(stream, stop)
        return done

    async def _own_pending_in(self, stream: str, stop: asyncio.Event) -> int:
        done, after = 0, "0"
        while not stop.is_set():
            reply = await self.redis.xreadgroup(
                self.group, self.name, {stream: after}, count=max(self.in_hand.free, 1)
            )
            entries = [e for _s, got in cast(list[tuple[str, Entries]], reply or []) for e in got]
            if not entries:
                break
            for entry_id, fields in entries:
                after = entry_id
                if (stream, entry_id) in self.in_hand:  # pending as it is being handled now
                    continue
                if not fields:  # trimmed or deleted while pending: nothing left to do
                    log.warning("consumer.entry_trimmed", stream=stream, entry_id=entry_id)
                    await self.redis.xack(stream, self.group, entry_id)
                    continue
                await self._redeliver(stream, entry_id, fields, "consumer.redelivered")
                done += 1
                if stop.is_set():
                    break
        return done

    async def _redeliver(
        self, stream: str, entry_id: str, fields: dict[str, str], event: str
    ) -> None:
        """Handle an entry delivered before, or dead-letter it after `max_deliveries`."""
        deliveries = await self._deliveries(stream, entry_id)
        if deliveries > self.options.max_deliveries:
            await self._dead_letter(stream, entry_id, fields, deliveries)
        else:
            log.info(event, entry_id=entry_id, deliveries=deliveries)
            await self._dispatch(stream, entry_id, fields)

    async def _deliveries(self, stream: str, entry_id: str) -> int:
        pending = await self.redis.xpending_range(
            stream, self.group, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 0

    async def _handle(self, stream: str, entry_id: str, fields: dict[str, str]) -> None:
        handled = asyncio.Event()
        keep_claim = asyncio.create_task(self._claims.keep(stream, entry_id, handled))
        try:
            with structlog.contextvars.bound_contextvars(msg_id=entry_id, stream=stream):
                try:
                    await self.handler(entry_id, fields)
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    log.exception("consumer.handler_failed", reason=reason)
                    errors_key = self.keys.delivery_errors(stream, self.group)
                    await awaitable(self.redis.hset(errors_key, entry_id, reason))
                    return
        finally:
            handled.set()
            await keep_claim  # ends by itself once `handled` is set: no cancel(), see ClaimKeeper
        await self._ack(stream, entry_id)

    async def _ack(self, stream: str, entry_id: str) -> None:
        """Ack a handled entry, retrying while Redis is away (left pending, it would be handled
        again). Once stopping, a failure gives up: the entry stays pending for a live member."""
        backoff = Backoff()
        streak = FailureStreak(
            log, "consumer.ack_failed", "consumer.ack_recovered", entry_id=entry_id
        )
        while True:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xack(stream, self.group, entry_id)
                    pipe.hdel(self.keys.delivery_errors(stream, self.group), entry_id)
                    await pipe.execute()
            except RedisError as exc:
                if not is_transient(exc):
                    raise
                if self._stop.is_set():
                    log.warning("consumer.ack_abandoned", entry_id=entry_id, error=str(exc))
                    return
                await pause(self._stop, streak.failed(exc, backoff.next_delay()))
                continue
            streak.recovered()
            return

    async def _dead_letter(
        self, stream: str, entry_id: str, fields: dict[str, str], deliveries: int
    ) -> None:
        errors_key = self.keys.delivery_errors(stream, self.group)
        last_error = cast(str | None, await awaitable(self.redis.hget(errors_key, entry_id)))
        reason = last_error or f"consumer died or timed out on all {deliveries - 1} deliveries"
        dead = {**fields, "source_id": entry_id, "group": self.group}
        dead |= {"deliveries": str(deliveries - 1), "reason": reason}
        await self.redis.xadd(self.keys.dead_letters(stream), dead)  # type: ignore[arg-type]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(stream, self.group, entry_id)
            pipe.hdel(errors_key, entry_id)
            await pipe.execute()
        log.error("consumer.dead_lettered", entry_id=entry_id, reason=reason)
        if self.on_dead_letter is not None:
            try:
                await self.on_dead_letter(entry_id, fields, reason)
            except RedisError:
                raise  # the loop rides it out; the entry is already dead-lettered
            except Exception:  # the entry is dead-lettered: a failing hook must not end the loop
                log.exception("consumer.dead_letter_hook_failed", entry_id=entry_id)


def _entries(reply: list[tuple[str, Entries]]) -> list[tuple[str, str, dict[str, str]]]:
    """An XREADGROUP reply as (stream, entry id, fields), in the reply's order."""
    return [(stream, entry_id, fields) for stream, entries in reply for entry_id, fields in entries]
