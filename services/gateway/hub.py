"""One reader per gateway process for every SSE client: it follows all partition logs and fans
each event out to the clients watching that task, so a thousand browsers cost one Redis read,
not a thousand blocked connections.

A client whose queue overflows (it reads too slowly) is dropped; its browser reconnects with
Last-Event-ID and replays what it missed from the task's stream.

While Redis is away (restart, failover, CLIENT KILL) the hub keeps its clients and retries its
read with capped, jittered backoff from the last position it dispatched, so no event is lost or
sent twice; `problem` says why it is not following (what `/ready` reports). An entry that is
not a known event (written by hand, or by a newer version) is logged and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import structlog

from libs.common.backoff import Backoff, FailureStreak, is_transient, pause
from libs.events import EventStore, StoredEvent, encode
from libs.events.store import Entries, Undecodable

__all__ = ["ALL_TASKS", "HEARTBEAT", "EventHub", "LiveEvent", "Subscription", "live_events"]

log = structlog.get_logger(__name__)

QUEUE_LIMIT = 2000
ALL_TASKS = -1  # subscribe(ALL_TASKS): every event of every task (GET /events)


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """An event as the hub fans it out: `data` is its JSON, encoded once for all the clients."""

    stored: StoredEvent
    data: str


@dataclass(eq=False)
class Subscription:
    task_id: int
    queue: asyncio.Queue[LiveEvent | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT)
    )
    overflowed: bool = False


HEARTBEAT = None  # what `live_events` yields after a quiet interval


async def live_events(
    subscription: Subscription, heartbeat_s: float
) -> AsyncIterator[LiveEvent | None]:
    """A subscription's events as they arrive, and HEARTBEAT (None) after each `heartbeat_s` of
    silence; ends when the hub stops or drops this client for falling too far behind."""
    queue = subscription.queue
    while True:
        if queue.empty():  # a timer only when the client has to wait (wait_for costs a task)
            try:
                async with asyncio.timeout(heartbeat_s):
                    live = await queue.get()
            except TimeoutError:
                yield HEARTBEAT
                continue
        else:
            live = queue.get_nowait()
        if live is None:
            return
        yield live


class EventHub:
    def __init__(self, store: EventStore, block_ms: int = 1000) -> None:
        self.store = store
        self.block_ms = block_ms
        self._subscribers: dict[int, set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._streak = FailureStreak(log, "sse_hub.read_failed", "sse_hub.recovered")

    async def start(self) -> None:
        logs = self.store.keys.partition_logs()
        positions = {}
        for log_key in logs:  # start from what exists now: clients replay older events
            newest = cast(Entries, await self.store.redis.xrevrange(log_key, count=1))
            positions[log_key] = newest[0][0] if newest else "0-0"
        self._task = asyncio.create_task(self._run(logs, positions), name="sse-hub")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                with contextlib.suppress(asyncio.QueueFull):
                    subscription.queue.put_nowait(None)

    def subscribe(self, task_id: int) -> Subscription:
        subscription = Subscription(task_id)
        self._subscribers[task_id].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.task_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.task_id]

    @property
    def clients(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    @property
    def problem(self) -> str | None:
        """Why the hub is not following the logs now (None while it is)."""
        if self._task is None:
            return "not started"
        if self._task.done():
            return "stopped"
        if self._streak.failing:
            down_s = time.monotonic() - self._streak.since
            return f"not following for {down_s:.1f} s: {self._streak.last_error}"
        return None

    async def _run(self, logs: list[str], positions: dict[str, str]) -> None:
        backoff = Backoff()
        follow = self.store.follow_entries(logs, positions, block_ms=self.block_ms)
        while not self._stop.is_set():
            try:
                item = await anext(follow)
            except Exception as exc:  # keep serving the clients; read again from `positions`
                if not is_transient(exc) and not self._streak.failing:
                    log.exception("sse_hub.read_error")  # a bug, not an outage: say where
                await pause(self._stop, self._streak.failed(exc, backoff.next_delay()))
                follow = self.store.follow_entries(logs, positions, block_ms=self.block_ms)
                continue
            if self._streak.recovered():
                backoff.reset()
            if item is None:
                continue
            log_key, entry = item
            positions[log_key] = entry.entry_id
            if isinstance(entry, Undecodable):
                log.error("sse_hub.undecodable_entry", log=log_key, entry_id=entry.entry_id)
                continue
            self._dispatch(entry)
        await follow.aclose()

    def _dispatch(self, stored: StoredEvent) -> None:
        watchers = [
            *self._subscribers.get(stored.event.task_id, ()),
            *self._subscribers.get(ALL_TASKS, ()),
        ]
        if not watchers:
            return
        live = LiveEvent(stored, encode(stored.event).decode())
        for subscription in watchers:
            try:
                subscription.queue.put_nowait(live)
            except asyncio.QueueFull:
                subscription.overflowed = True
                self.unsubscribe(subscription)
                with contextlib.suppress(asyncio.QueueFull):
                    subscription.queue.get_nowait()
                    subscription.queue.put_nowait(None)
