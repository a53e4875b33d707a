"""Cluster-wide gauges the gateway reads from Redis when Prometheus scrapes it, for the alert
rules and the dashboard: per service (runner, ingestor) over its command streams (the runners'
one per partition, summed) the consumer group's lag, the age of its oldest undelivered entry,
its pending entries and their longest idle time, its dead letters, and the live workers with
the slots they offer and use (from their heartbeats); how far the projector is behind each
partition log; and this gateway's SSE clients.

Every gateway answers the same cluster-wide values (aggregate them with max, not sum). The
Redis work per scrape is bounded: a few pipelines per service (each one round trip however many
partitions there are, and each command single-key, so it also holds on a cluster), one pipeline
over the partition logs, all under the caller's timeout (`metrics_endpoint`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from libs.events import INGESTORS_GROUP, RUNNERS_GROUP, Keys
from libs.events.ids import entry_key
from libs.events.store import Entries
from libs.events.workers import WorkerRegistry
from services.gateway.jobs_api import ServiceView, _group_info, _pending, runner_streams

__all__ = ["ClusterCollector", "ClusterSnapshot", "StreamSample", "read_cluster"]


@dataclass(frozen=True)
class StreamSample:
    """One command stream's consumer group, as the gauges show it."""

    service: str
    lag: int | None  # None: the group does not exist yet, or Redis cannot count it
    oldest_undelivered_s: float
    pending: int
    pending_max_idle_s: float
    dead_letters: int
    live_workers: int
    slots: int
    in_hand: int


@dataclass(frozen=True)
class ClusterSnapshot:
    streams: list[StreamSample] = field(default_factory=list)
    projector_lag_s: dict[int, float] = field(default_factory=dict)


def _age_s(entry_id: str, now: float) -> float:
    """Seconds since the entry was appended (its id's milliseconds), never negative."""
    return max(0.0, now - entry_key(entry_id)[0] / 1000)


async def _undelivered_and_dead(
    redis: aioredis.Redis, keys: Keys, view: ServiceView, now: float
) -> tuple[float, int]:
    """The age of the oldest entry not yet delivered, over every stream with the group (the
    first entry after its last-delivered id), and the entries of all their dead-letter streams;
    one pipeline of single-key commands, so it holds on a cluster too."""
    dead_sources = list(dict.fromkeys([*view.streams, *view.optional]))
    async with redis.pipeline(transaction=False) as pipe:
        for stream, after in view.last_delivered.items():
            pipe.xrange(stream, f"({after}", "+", count=1)
        for stream in dead_sources:
            pipe.xlen(keys.dead_letters(stream))
        replies: list[Any] = await pipe.execute()
    firsts = cast(list[Entries], replies[: len(view.last_delivered)])
    lengths = replies[len(view.last_delivered) :]
    oldest = max((_age_s(entries[0][0], now) for entries in firsts if entries), default=0.0)
    return oldest, sum(int(n) for n in lengths)


async def read_stream(
    redis: aioredis.Redis,
    keys: Keys,
    service: str,
    streams: list[str],
    group: str,
    now: float,
    optional: frozenset[str] = frozenset(),
) -> StreamSample:
    """One service's sample over all its command streams: lags, pending counts and dead letters
    summed; the oldest undelivered age and the longest pending idle time the max."""
    view = ServiceView(service=service, streams=streams, group=group, optional=optional)
    view.workers = await WorkerRegistry(redis, keys.namespace).live_workers(service, now)
    exists = await _group_info(redis, view)
    if exists:
        await _pending(redis, view)  # the oldest PENDING_LIMIT entries of each stream: bounded
    oldest_undelivered_s, dead_letters = await _undelivered_and_dead(redis, keys, view, now)
    return StreamSample(
        service=service,
        lag=view.lag if exists else None,
        oldest_undelivered_s=oldest_undelivered_s,
        pending=view.pending_count,
        pending_max_idle_s=view.pending_max_idle_ms / 1000,
        dead_letters=dead_letters,
        live_workers=len(view.workers),
        slots=sum(w.slots for w in view.workers),
        in_hand=sum(w.entries_in_hand for w in view.workers),
    )


async def projector_lag(redis: aioredis.Redis, keys: Keys, now: float) -> dict[int, float]:
    """Per partition, the age of the oldest log entry the projector has not moved past (0 when
    it is caught up). Its positions are those it announces in `Keys.projected` after each
    commit."""
    positions: dict[str, str] = await redis.hgetall(keys.projected)  # type: ignore[misc]
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(keys.partitions):
            after = positions.get(str(partition), "0-0")
            pipe.xrange(keys.partition_log(partition), f"({after}", "+", count=1)
        replies: list[Entries] = await pipe.execute()
    return {
        partition: _age_s(entries[0][0], now) if entries else 0.0
        for partition, entries in enumerate(replies)
    }


async def read_cluster(redis: aioredis.Redis, keys: Keys) -> ClusterSnapshot:
    """Everything the gauges show, read now (the caller bounds it with a timeout)."""
    now = time.time()
    streams = [
        await read_stream(
            redis,
            keys,
            "runner",
            runner_streams(keys),
            RUNNERS_GROUP,
            now,
            frozenset([keys.legacy_run_commands]),
        ),
        await read_stream(redis, keys, "ingestor", [keys.ingest_commands], INGESTORS_GROUP, now),
    ]
    return ClusterSnapshot(streams=streams, projector_lag_s=await projector_lag(redis, keys, now))


def _by_service(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["service"])


class ClusterCollector(Collector):
    """The snapshot as gauges; `snapshot=None` (Redis did not answer in time) leaves the
    cluster gauges out and sets ragpoc_cluster_read_ok to 0."""

    def __init__(self, snapshot: ClusterSnapshot | None, sse_clients: int) -> None:
        self.snapshot = snapshot
        self.sse_clients = sse_clients

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "ragpoc_sse_clients",
            "SSE clients connected to this gateway now (task streams and the all-events feed)",
            value=self.sse_clients,
        )
        yield GaugeMetricFamily(
            "ragpoc_cluster_read_ok",
            "1 when this scrape could read the cluster gauges from Redis, 0 when it could not",
            value=0 if self.snapshot is None else 1,
        )
        if self.snapshot is None:
            return
        yield from self._streams(self.snapshot.streams)
        lag = GaugeMetricFamily(
            "ragpoc_projector_lag_seconds",
            "Age of the oldest partition-log entry the projector has not folded yet (0: caught up)",
            labels=["partition"],
        )
        for partition, seconds in self.snapshot.projector_lag_s.items():
            lag.add_metric([str(partition)], seconds)
        yield lag

    @staticmethod
    def _streams(streams: list[StreamSample]) -> Iterator[GaugeMetricFamily]:
        lag = _by_service("ragpoc_stream_lag", "Command-stream entries not yet delivered")
        undelivered = _by_service(
            "ragpoc_stream_oldest_undelivered_seconds",
            "Age of the oldest command not yet delivered to a consumer (0: none waiting)",
        )
        pending = _by_service("ragpoc_stream_pending", "Commands delivered and not yet acked")
        idle = _by_service(
            "ragpoc_stream_pending_max_idle_seconds",
            "Longest time a pending command went untouched (a live consumer touches its own "
            "every RAGPOC_CONSUMER_MIN_IDLE_MS / 3)",
        )
        dead = _by_service("ragpoc_dead_letters", "Entries in the command stream's dead letters")
        live = _by_service("ragpoc_workers_live", "Workers with a fresh heartbeat")
        slots = _by_service("ragpoc_worker_slots", "Entries the live workers can hold at once")
        in_hand = _by_service("ragpoc_worker_entries_in_hand", "Entries the live workers hold")
        for s in streams:
            label = [s.service]
            if s.lag is not None:
                lag.add_metric(label, s.lag)
            undelivered.add_metric(label, s.oldest_undelivered_s)
            pending.add_metric(label, s.pending)
            idle.add_metric(label, s.pending_max_idle_s)
            dead.add_metric(label, s.dead_letters)
            live.add_metric(label, s.live_workers)
            slots.add_metric(label, s.slots)
            in_hand.add_metric(label, s.in_hand)
        yield from (lag, undelivered, pending, idle, dead, live, slots, in_hand)
