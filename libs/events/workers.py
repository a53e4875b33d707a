"""The worker registry: every consumer process heartbeats a small record, so `GET /api/jobs` can
tell live workers from dead ones.

One Redis hash per service kind, `{ns}:workers:{service}`, field = worker id (the consumer
name), value = the JSON of a `WorkerInfo`. A record whose `seen_at` is older than
`STALE_BEATS` times its own heartbeat interval is a dead worker's; each heartbeat prunes the records
older than `PRUNE_BEATS` times the interval, and a clean shutdown removes its own record.
`heartbeat_until` is the loop a consumer runs for it; Redis errors there are logged once per
outage, never raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from libs.common.backoff import FailureStreak, pause
from libs.events.ids import entry_key
from libs.events.redis_typing import awaitable

__all__ = [
    "PRUNE_BEATS",
    "STALE_BEATS",
    "WorkerInfo",
    "WorkerRegistry",
    "heartbeat_until",
    "workers_key",
]

log = structlog.get_logger(__name__)

STALE_BEATS = 3
PRUNE_BEATS = 10


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    service: str
    host: str
    pid: int
    started_at: float
    current_entry: str | None = None  # the oldest entry in hand
    entries_in_hand: int = 0
    slots: int = 1  # how many entries it handles at once
    seen_at: float = 0.0
    interval_s: float = 2.0  # the writer's heartbeat interval: readers judge staleness by it

    def is_live(self, now: float) -> bool:
        return now - self.seen_at <= STALE_BEATS * self.interval_s

    def is_prunable(self, now: float) -> bool:
        return now - self.seen_at > PRUNE_BEATS * self.interval_s


def workers_key(namespace: str, service: str) -> str:
    """Hash: worker id -> WorkerInfo JSON, for one service kind ("runner", "ingestor")."""
    return f"{namespace}:workers:{service}"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WorkerInfo)


class WorkerRegistry:
    def __init__(self, redis: aioredis.Redis, namespace: str, interval_s: float = 2.0) -> None:
        self.redis = redis
        self.namespace = namespace
        self.interval_s = interval_s

    def key(self, service: str) -> str:
        return workers_key(self.namespace, service)

    async def heartbeat(self, info: WorkerInfo) -> WorkerInfo:
        """Write `info` as seen now (with this registry's interval); prune long-dead records."""
        now = time.time()
        record = msgspec.structs.replace(info, seen_at=now, interval_s=self.interval_s)
        key = self.key(info.service)
        await awaitable(self.redis.hset(key, info.id, _encoder.encode(record).decode()))
        dead = [w.id for w in await self.workers(info.service) if w.is_prunable(now)]
        if dead:
            await awaitable(self.redis.hdel(key, *dead))
        return record

    async def workers(self, service: str) -> list[WorkerInfo]:
        """Every record of `service`, live or not (undecodable ones are skipped)."""
        raw = cast(dict[str, str], await awaitable(self.redis.hgetall(self.key(service))))
        found: list[WorkerInfo] = []
        for value in raw.values():
            try:
                found.append(_decoder.decode(value))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        return sorted(found, key=lambda w: (w.started_at, w.id))

    async def live_workers(self, service: str, now: float | None = None) -> list[WorkerInfo]:
        moment = time.time() if now is None else now
        return [w for w in await self.workers(service) if w.is_live(moment)]

    async def remove(self, worker: WorkerInfo) -> None:
        await awaitable(self.redis.hdel(self.key(worker.service), worker.id))


async def heartbeat_until(
    registry: WorkerRegistry,
    info: WorkerInfo,
    in_hand: Callable[[], list[str]],
    done: asyncio.Event,
) -> None:
    """Publish `info` (with the entries in hand now) every `registry.interval_s` until `done`
    is set, then remove its record. While Redis is away the beats fail, logged once per outage;
    the first beat after it publishes the worker again."""
    streak = FailureStreak(log, "consumer.heartbeat_failed", "consumer.heartbeat_recovered")
    while not done.is_set():
        try:
            entries = in_hand()
            beat = msgspec.structs.replace(
                info,
                current_entry=min(entries, key=entry_key) if entries else None,
                entries_in_hand=len(entries),
            )
            await registry.heartbeat(beat)
        except RedisError as exc:
            streak.failed(exc, registry.interval_s)
        else:
            streak.recovered()
        await pause(done, registry.interval_s)
    try:
        await registry.remove(info)
    except RedisError as exc:
        log.warning("consumer.unregister_failed", error=str(exc))
