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
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import cast

import structlog

from libs.common.backoff import Backoff, FailureStreak, is_transient, pause
from libs.events import EventStore, StoredEvent, encode
from libs.events.store import Entries, Undecodable

__all__ = ["ALL_TASKS", "HEARTBEAT", "EventHub", "LiveEvent", "Subscription", "live_events"]

log = structlog.get_logger(__name__)

QUEUE_LIMIT = 2000
ALL_TASKS = -1  # subscribe(ALL_TASKS): every event of every task (GET /events)


@dataclass(slots=True)
class LiveEvent:
    """An event as the hub fans it out: `data` is its JSON, encoded once for all the clients;
    `frame` is its task-stream SSE frame, built by the first client that sends it and shared by
    the others (every client of a task gets the same bytes)."""

    stored: StoredEvent
    data: str
    frame: bytes | None = None


class Subscription:
    """One client's feed: the events the hub has for it and not yet sent, at most QUEUE_LIMIT.

    The client's task waits on one future that the hub resolves when it adds an event or closes
    the feed, and that one heartbeat timer per client resolves when the client has been quiet
    for `heartbeat_s`; that timer is re-armed only when it fires, so a busy client costs no timer
    per event (an `asyncio.timeout` per wait would)."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        self.pending: deque[LiveEvent] = deque()
        self.closed = False  # the hub stopped, or dropped this client: no more events
        self.overflowed = False
        self.beat_due = False
        self.quiet_since = 0.0  # loop time of the client's last send
        self._waiter: asyncio.Future[None] | None = None

    def push(self, live: LiveEvent) -> bool:
        """Add an event; False when the client is QUEUE_LIMIT events behind."""
        if len(self.pending) >= QUEUE_LIMIT:
            return False
        self.pending.append(live)
        self._wake()
        return True

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Until an event arrives, the feed closes or a heartbeat is due."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def follow_silence(self, heartbeat_s: float) -> Callable[[], None]:
        """Arm the heartbeat timer (it stops by itself once the feed is closed); `live_events`
        resets `quiet_since` at every send. Returns the function that disarms it."""
        loop = asyncio.get_running_loop()
        self.quiet_since = loop.time()
        handle: asyncio.TimerHandle | None = None

        def check() -> None:
            nonlocal handle
            if self.closed:
                return
            due_at = self.quiet_since + heartbeat_s
            if loop.time() >= due_at - 0.005:  # loop timers may fire a millisecond early
                self.beat_due = True
                self._wake()
                due_at = loop.time() + heartbeat_s
            handle = loop.call_at(due_at, check)

        handle = loop.call_at(self.quiet_since + heartbeat_s, check)

        def disarm() -> None:
            if handle is not None:
                handle.cancel()

        return disarm


HEARTBEAT = None  # what `live_events` yields after a quiet interval


async def live_events(
    subscription: Subscription, heartbeat_s: float
) -> AsyncGenerator[list[LiveEvent] | None, None]:
    """A subscription's events as they arrive, every event waiting at that moment in one batch
    (a client that fell behind catches up with one write, not one per event), and HEARTBEAT
    (None) after each `heartbeat_s` of silence; ends, once what is pending is sent, when the hub
    stops or drops this client for falling too far behind."""
    loop = asyncio.get_running_loop()
    disarm = subscription.follow_silence(heartbeat_s)
    try:
        while True:
            if not subscription.pending and not subscription.closed:
                await subscription.wait()
            if subscription.pending:
                batch = list(subscription.pending)
                subscription.pending.clear()
                subscription.beat_due = False
                yield batch
            elif subscription.closed:
                return
            elif subscription.beat_due:
                subscription.beat_due = False
                yield HEARTBEAT
            else:
                continue
            subscription.quiet_since = loop.time()  # silence counts from the end of this send
            subscription.beat_due = False
    finally:
        disarm()


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
            # the read may be blocked for block_ms: a stopping gateway does not wait it out
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.close()

    def subscribe(self, task_id: int) -> Subscription:
        subscription = Subscription(task_id)
        self._subscribers[task_id].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close()
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
            # the kind of error only: its text is in the log, /ready answers anyone
            kind = self._streak.last_error.split(":", 1)[0]
            return f"not following for {down_s:.1f} s: {kind}"
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
            if not subscription.push(live):  # it sends what it has, ends, and resumes from there
                subscription.overflowed = True
                self.unsubscribe(subscription)
