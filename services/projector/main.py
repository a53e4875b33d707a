"""The projector: follows every partition log and folds events into the SQL read models.

It reads with plain XREAD from the positions stored in SQL (not through a consumer group): a
partition's events must be applied in order, and the position committed in the same transaction
as the rows makes redelivery harmless without acks. Several projectors may run; the position's
compare-and-set lets exactly one apply each batch.

One bad entry never stops it: an entry that is no known event, or an event the database refuses,
is parked (`libs.readmodels.parking`) in the transaction that moves the position past it, and the
rest of the batch is folded. Losing Redis or the database never ends it either: a failed step is
retried with backoff (`libs.common.backoff`: 0.1 s doubling to 5 s, jittered), logged once per
streak of failures and once when a step works again; since each transaction moves the position
with the rows it writes, the retry folds every event exactly once.

Every `RAGPOC_TRIM_INTERVAL_S` it also trims the Redis streams (`libs.events.retention`): it is
the service that knows what has reached the SQL archive (or was parked).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common import Settings, SettingsError
from libs.common.backoff import Backoff, FailureStreak, pause
from libs.common.database import create_engine, create_schema
from libs.common.shutdown import stop_on_signals
from libs.events import Keys, connect_redis
from libs.events.crossread import CrossSlotReader
from libs.events.redis_conn import is_cluster, publish
from libs.events.redis_typing import awaitable
from libs.events.retention import Trimmer
from libs.events.store import Entries
from libs.readmodels import LostRace, load_positions
from libs.readmodels.archive import SqlArchive
from libs.readmodels.parking import Projected, apply_or_park, apply_or_park_all
from services.projector import metrics

__all__ = ["APPLICATION_NAME", "Projector", "projector_engine", "serve", "trim_loop"]

log = structlog.get_logger(__name__)

# How the projector's PostgreSQL sessions are named (pg_stat_activity.application_name).
APPLICATION_NAME = "ragpoc-projector"


def projector_engine(url: str, application_name: str = APPLICATION_NAME) -> AsyncEngine:
    """The projector's engine; on PostgreSQL its sessions carry `application_name`, so an
    operator can tell them apart (or terminate them) in pg_stat_activity."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and "application_name" not in parsed.query:
        parsed = parsed.update_query_dict({"application_name": application_name})
        url = parsed.render_as_string(hide_password=False)
    return create_engine(url)


READ_COUNT = 500  # entries read from each partition log per step, at most


class Projector:
    def __init__(
        self,
        redis: aioredis.Redis,
        engine: AsyncEngine,
        keys: Keys,
        partitions: Sequence[int] | None = None,
    ) -> None:
        """Follows the logs of `partitions` (every partition by default): several projectors
        with disjoint ranges (RAGPOC_PROJECTOR_PARTITIONS) share the work."""
        self.redis = redis
        self.engine = engine
        self.keys = keys
        self.partitions = list(range(keys.partitions) if partitions is None else partitions)
        self.positions: dict[int, str] = {}
        self.backoff = Backoff()
        self.streak = FailureStreak(log, "projector.step_failed", "projector.recovered")
        self._partition_of_log = {keys.partition_log(p): p for p in self.partitions}
        # one XREAD for every log on a single server, one per log's slot on a cluster
        self.reader = CrossSlotReader(redis, READ_COUNT)
        self._started = False
        self._stale = False  # a step failed midway: the stored positions may have moved

    async def start(self) -> None:
        await create_schema(self.engine)
        self.positions = await load_positions(self.engine)
        self._started = True

    async def step(self, block_ms: int | None) -> int:
        """Read what is new in every partition log and project it, parking what cannot be;
        returns how many entries the positions moved past (applied or parked)."""
        if self._stale:
            self.positions = await load_positions(self.engine)
            self._stale = False
        wanted = {
            log_key: self.positions.get(p, "0-0") for log_key, p in self._partition_of_log.items()
        }
        reply = await self.reader.read(wanted, block_ms)
        batches = {self._partition_of_log[log_key]: entries for log_key, entries in reply}
        if not batches:
            return 0
        self._stale = True  # until the outcome is known
        done = await apply_or_park_all(self.engine, batches)
        self._stale = False
        if done is None:  # refused: partition by partition, to park the culprit or see the race
            done = await self._apply_each(batches)
        settled = 0
        moved: dict[int, str] = {}
        for partition, projected in done.items():
            if projected.position is not None:
                self.positions[partition] = projected.position
                moved[partition] = projected.position
            settled += projected.applied + len(projected.parked)
            metrics.count_step(projected.applied, len(projected.parked))
            for parked in projected.parked:
                log.error(
                    "projector.parked",
                    partition=partition,
                    entry_id=parked.entry_id,
                    task_id=parked.task_id,
                    type=parked.type,
                    reason=parked.reason,
                )
        if moved:
            await self._announce(moved)
        return settled

    async def _apply_each(self, batches: dict[int, Entries]) -> dict[int, Projected]:
        done: dict[int, Projected] = {}
        for partition, entries in batches.items():
            try:
                self._stale = True  # until this partition's outcome is known
                done[partition] = await apply_or_park(
                    self.engine, partition, entries, self.positions.get(partition)
                )
            except LostRace:
                log.info("projector.lost_race", partition=partition)
                self.positions = await load_positions(self.engine)
            self._stale = False
        return done

    async def _announce(self, moved: dict[int, str]) -> None:
        """Record and publish the positions this step committed, for the gateways'
        read-your-writes (`services/gateway/projection_watch.py`). Best effort: a gateway that
        misses it asks SQL, where the positions are committed already."""
        message = " ".join(f"{p}={i}" for p, i in moved.items())
        try:
            if is_cluster(self.redis):  # a cluster pipeline refuses PUBLISH
                await awaitable(self.redis.hset(self.keys.projected, mapping=moved))
                await publish(self.redis, self.keys.projected, message)
                return
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(self.keys.projected, mapping=moved)
                pipe.publish(self.keys.projected, message)
                await pipe.execute()
        except RedisError as exc:
            log.info("projector.announce_failed", error=f"{type(exc).__name__}: {exc}")

    async def catch_up(self) -> int:
        """Project everything in the logs now, then return (burst mode, for tests and tools)."""
        total = 0
        while (settled := await self.step(block_ms=None)) > 0:
            total += settled
        return total

    async def run(self, stop: asyncio.Event, block_ms: int = 1000, linger_ms: int = 0) -> None:
        """Project until `stop` is set. A failed step (Redis or the database gone, or anything
        else) is logged once per streak and retried with backoff: this never raises.

        After a step that found less than a full read, wait `linger_ms` before the next read:
        what arrives meanwhile is folded in one transaction rather than in one per handful of
        events (a step's cost is in its statements, not its events). A write arriving while
        the projector is idle is read at once; only the ones right behind it wait."""
        log.info("projector.started", partitions=_ranges(self.partitions))
        while not stop.is_set():
            try:
                if not self._started:
                    await self.start()
                settled = await self.step(block_ms)
            except Exception as exc:
                self._stale = True
                metrics.STEP_FAILURES.inc()
                if not self.streak.failing and not _dependency_error(exc):
                    log.error("projector.unexpected_error", exc_info=exc)  # a bug: its traceback
                await pause(stop, self.streak.failed(exc, self.backoff.next_delay()))
                continue
            if self.streak.recovered():
                self.backoff.reset()
            if 0 < settled < READ_COUNT and linger_ms > 0:
                await pause(stop, linger_ms / 1000)
        await self.reader.close()
        log.info("projector.stopped")


def _ranges(partitions: Sequence[int]) -> str:
    """[0, 1, 2, 5] as "0-2,5": what a log line says this projector follows."""
    runs: list[list[int]] = []
    for p in partitions:
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _dependency_error(exc: BaseException) -> bool:
    """Redis, the database or the network failed (rather than the projector's own code)."""
    return isinstance(exc, aioredis.RedisError | SQLAlchemyError | OSError)


async def trim_loop(trimmer: Trimmer, interval_s: float, stop: asyncio.Event) -> None:
    """Trim the streams every `interval_s` until `stop` is set (never when it is 0), logging one
    line per pass. A failed pass is retried with backoff (at most `interval_s` apart), logged
    once per streak of failures and once when a pass works again; this never raises."""
    if interval_s <= 0:
        log.info("trim.disabled")
        return
    backoff, streak = Backoff(), FailureStreak(log, "trim.failed", "trim.recovered")
    wait = interval_s
    while True:
        await pause(stop, wait)
        if stop.is_set():
            return
        try:
            report = await trimmer.run_once()
        except Exception as exc:
            wait = streak.failed(exc, min(backoff.next_delay(), interval_s))
            continue
        if streak.recovered():
            backoff.reset()
        wait = interval_s
        log.info("trim.pass", cutoff=report.cutoff, **report.counts())


def partitions_to_follow(settings: Settings) -> list[int]:
    """RAGPOC_PROJECTOR_PARTITIONS as the sorted partitions it names (every one when unset);
    SettingsError for a partition outside 0..RAGPOC_PARTITIONS-1."""
    if not settings.projector_partitions:
        return list(range(settings.partitions))
    chosen: set[int] = set()
    for part in settings.projector_partitions.split(","):
        low, _, high = part.partition("-")
        chosen.update(range(int(low), int(high or low) + 1))
    if not chosen or max(chosen) >= settings.partitions:
        raise SettingsError(
            f"RAGPOC_PROJECTOR_PARTITIONS={settings.projector_partitions} must name partitions "
            f"within 0..{settings.partitions - 1} (RAGPOC_PARTITIONS={settings.partitions})"
        )
    return sorted(chosen)


async def serve(settings: Settings) -> None:
    redis = connect_redis(settings.redis_url, cluster=settings.cluster_mode)
    engine = projector_engine(settings.sqlalchemy_url)
    keys = Keys(settings.namespace, settings.partitions)
    partitions = partitions_to_follow(settings)
    projector = Projector(redis, engine, keys, partitions)
    trimmer = Trimmer(
        redis, keys, SqlArchive(engine), settings.stream_retention_s, partitions=partitions
    )
    stop = stop_on_signals()
    try:
        await asyncio.gather(
            projector.run(stop, settings.consumer_block_ms, settings.projector_linger_ms),
            trim_loop(trimmer, settings.trim_interval_s, stop),
        )
    finally:
        await redis.aclose()
        await engine.dispose()


def main(settings: Settings) -> None:
    partitions_to_follow(settings)  # a bad RAGPOC_PROJECTOR_PARTITIONS stops it here
    metrics.serve_metrics(settings)
    asyncio.run(serve(settings))
