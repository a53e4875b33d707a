"""Read-your-writes without polling: the gateway learns how far the projector has got from the
projector itself.

After each batch it commits, the projector records its position per partition in a Redis hash
and publishes it (`Keys.projected` for both, see `services/projector/main.py`). Each gateway has
one `ProjectionWatch`: a task subscribed to that channel, which keeps the newest position of
every partition in memory and wakes the requests waiting for one. A request that appended an
event waits (`wait`) until its partition's position has passed the event, so what the client
reads next (a task, its runs) includes its own write.

Pub/sub loses what is published while the subscription is down, so the watch reads the hash
again after every (re)subscription, and a waiter that hears nothing for `FALLBACK_S` asks SQL
once itself: a lost message costs that much latency, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import redis.asyncio as aioredis
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.backoff import Backoff, FailureStreak, pause
from libs.events import Appended, Keys
from libs.events.ids import is_after
from libs.events.redis_conn import pubsub_client
from libs.readmodels import projected_position

__all__ = ["FALLBACK_S", "ProjectionWatch", "parse_positions"]

log = structlog.get_logger(__name__)

FALLBACK_S = 0.25  # a waiter that heard nothing this long asks SQL itself
LISTEN_S = 1.0  # one wait for a message (below every client's socket timeout)


def parse_positions(message: str) -> dict[int, str]:
    """`"3=1700000000000-0 5=1700000000001-2"` -> {3: ..., 5: ...}; what does not parse is
    left out."""
    positions = {}
    for part in message.split():
        partition, _, entry_id = part.partition("=")
        if partition.isdigit() and entry_id:
            positions[int(partition)] = entry_id
    return positions


class ProjectionWatch:
    def __init__(self, redis: aioredis.Redis, engine: AsyncEngine, keys: Keys) -> None:
        self.redis = redis
        self.engine = engine
        self.keys = keys
        self.positions: dict[int, str] = {}
        self._waiters: dict[int, list[tuple[str, asyncio.Future[None]]]] = defaultdict(list)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._streak = FailureStreak(log, "projection_watch.failed", "projection_watch.recovered")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="projection-watch")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def advance(self, positions: dict[int, str]) -> None:
        """Take newer positions in, and wake the waiters they satisfy."""
        for partition, entry_id in positions.items():
            known = self.positions.get(partition)
            if known is not None and not is_after(entry_id, known):
                continue
            self.positions[partition] = entry_id
            waiting = self._waiters.get(partition, [])
            still = []
            for target, future in waiting:
                if is_after(target, entry_id):
                    still.append((target, future))
                elif not future.done():
                    future.set_result(None)
            self._waiters[partition] = still

    def _passed(self, appended: Appended) -> bool:
        known = self.positions.get(appended.partition)
        return known is not None and not is_after(appended.log_id, known)

    async def wait(self, appended: Appended, bound_s: float = 3.0) -> bool:
        """Until the projector has passed `appended` (True), or `bound_s` passed first (False:
        the write is safe in the log either way)."""
        deadline = time.monotonic() + bound_s
        while not self._passed(appended):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (appended.log_id, future)
            self._waiters[appended.partition].append(entry)
            try:
                await asyncio.wait_for(future, timeout=min(remaining, FALLBACK_S))
            except TimeoutError:  # nothing heard: a message may have been lost, ask SQL
                position = await projected_position(self.engine, appended.partition)
                if position is not None:
                    self.advance({appended.partition: position})
            finally:
                waiting = self._waiters.get(appended.partition, [])
                if entry in waiting:
                    waiting.remove(entry)
        return True

    async def _run(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            subscriber = self.redis
            try:
                # on a cluster: a plain client on one node, picked again after each failure
                subscriber = await pubsub_client(self.redis, name="ragpoc:projection-watch")
                async with subscriber.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.keys.projected)
                    # what was published before the subscription: the hash has it
                    stored = await self.redis.hgetall(self.keys.projected)  # type: ignore[misc]
                    self.advance({int(p): i for p, i in stored.items() if str(p).isdigit()})
                    if self._streak.recovered():
                        backoff.reset()
                    while not self._stop.is_set():
                        # a quiet channel is no error: get_message waits, listen() would time
                        # out on the client's socket timeout
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=LISTEN_S
                        )
                        if message is not None and message.get("type") == "message":
                            self.advance(parse_positions(str(message["data"])))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: waiters fall back to SQL meanwhile
                await pause(self._stop, self._streak.failed(exc, backoff.next_delay()))
            finally:
                if subscriber is not self.redis:
                    await subscriber.aclose()
