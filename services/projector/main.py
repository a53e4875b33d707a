"""The projector: follows every partition log and folds events into the SQL read models.

It reads with plain XREAD from the positions stored in SQL (not through a consumer group): a
partition's events must be applied in order, and the position committed in the same transaction
as the rows makes redelivery harmless without acks. Several projectors may run; the position's
compare-and-set lets exactly one apply each batch.

Every `RAGPOC_TRIM_INTERVAL_S` it also trims the Redis streams (`libs.events.retention`): it is
the service that knows what has reached the SQL archive.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import redis.asyncio as aioredis
import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common import Settings
from libs.common.database import create_engine, create_schema
from libs.common.shutdown import stop_on_signals
from libs.events import EventDecodeError, Keys, StoredEvent, connect_redis, decode_event
from libs.events.retention import Trimmer
from libs.events.store import Entries
from libs.readmodels import LostRace, apply_batch, load_positions
from libs.readmodels.archive import SqlArchive

__all__ = ["Projector", "serve", "trim_loop"]

log = structlog.get_logger(__name__)


class Projector:
    def __init__(self, redis: aioredis.Redis, engine: AsyncEngine, keys: Keys) -> None:
        self.redis = redis
        self.engine = engine
        self.keys = keys
        self.positions: dict[int, str] = {}
        self._partition_of_log = {keys.partition_log(p): p for p in range(keys.partitions)}

    async def start(self) -> None:
        await create_schema(self.engine)
        self.positions = await load_positions(self.engine)

    async def step(self, block_ms: int | None) -> int:
        """Read what is new in every partition log and project it; returns events applied."""
        wanted = {
            log_key: self.positions.get(p, "0-0") for log_key, p in self._partition_of_log.items()
        }
        reply = await self.redis.xread(wanted, count=500, block=block_ms)  # type: ignore[arg-type]
        applied = 0
        for log_key, entries in cast(list[tuple[str, Entries]], reply or []):
            partition = self._partition_of_log[log_key]
            batch = [e for e in (_decode(entry_id, fields) for entry_id, fields in entries) if e]
            try:
                if batch:
                    self.positions[partition] = await apply_batch(self.engine, partition, batch)
                    applied += len(batch)
                if entries and not batch:
                    self.positions[partition] = entries[-1][0]
            except LostRace:
                log.info("projector.lost_race", partition=partition)
                self.positions = await load_positions(self.engine)
        return applied

    async def catch_up(self) -> int:
        """Project everything in the logs now, then return (burst mode, for tests and tools)."""
        total = 0
        while (applied := await self.step(block_ms=None)) > 0:
            total += applied
        return total

    async def run(self, stop: asyncio.Event, block_ms: int = 1000) -> None:
        log.info("projector.started", partitions=self.keys.partitions)
        while not stop.is_set():
            await self.step(block_ms)
        log.info("projector.stopped")


def _decode(entry_id: str, fields: dict[str, str]) -> StoredEvent | None:
    try:
        return StoredEvent(
            entry_id=entry_id,
            stream_id=fields.get("sid", entry_id),
            event=decode_event(fields["data"]),
        )
    except (EventDecodeError, KeyError) as exc:
        log.error("projector.undecodable_entry", entry_id=entry_id, error=str(exc))
        return None


async def trim_loop(trimmer: Trimmer, interval_s: float, stop: asyncio.Event) -> None:
    """Trim the streams every `interval_s` until `stop` is set (never when it is 0), logging one
    line per pass. A failed pass is logged and retried at the next interval."""
    if interval_s <= 0:
        log.info("trim.disabled")
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        if stop.is_set():
            return
        try:
            report = await trimmer.run_once()
        except (aioredis.RedisError, SQLAlchemyError, OSError) as exc:
            log.warning("trim.failed", error=f"{type(exc).__name__}: {exc}")
            continue
        log.info("trim.pass", cutoff=report.cutoff, **report.counts())


async def serve(settings: Settings) -> None:
    redis = connect_redis(settings.redis_url)
    engine = create_engine(settings.sqlalchemy_url)
    keys = Keys(settings.namespace, settings.partitions)
    projector = Projector(redis, engine, keys)
    trimmer = Trimmer(redis, keys, SqlArchive(engine), settings.stream_retention_s)
    stop = stop_on_signals()
    try:
        await projector.start()
        await asyncio.gather(
            projector.run(stop, settings.consumer_block_ms),
            trim_loop(trimmer, settings.trim_interval_s, stop),
        )
    finally:
        await redis.aclose()
        await engine.dispose()


def main(settings: Settings) -> None:
    asyncio.run(serve(settings))
