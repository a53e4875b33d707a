"""The gateway's Prometheus metrics.

Request-side counters live in this process. Run outcomes happen in runners, so runners count
them in Redis hashes (`Keys.run_stats`, one per partition) and every gateway exposes the
cluster-wide totals, with the cluster gauges of `services.gateway.cluster_metrics` (lag, dead
letters, live workers, projector lag) read at scrape time.

What a scrape reads from Redis is bounded by SCRAPE_READ_TIMEOUT_S: a read that fails or
takes longer leaves its metrics out of that scrape rather than failing it, so the process's
own counters still arrive while Redis is away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from libs.events.lock import CONFLICT_LAYERS
from libs.events.stats import DURATION_BUCKETS, RunStats
from services.gateway.cluster_metrics import ClusterCollector, read_cluster
from services.gateway.context import context_of

__all__ = [
    "LIMITED_REQUESTS",
    "RUNS_ACCEPTED",
    "RUNS_REJECTED",
    "RUNS_REPLAYED",
    "RUNS_REQUESTED",
    "SCRAPE_READ_TIMEOUT_S",
    "TASKS_CREATED",
    "metrics_endpoint",
]

log = structlog.get_logger(__name__)

SCRAPE_READ_TIMEOUT_S = 2.0
T = TypeVar("T")

TASKS_CREATED = Counter("ragpoc_tasks_created_total", "Tasks created through this gateway")
RUNS_REQUESTED = Counter("ragpoc_runs_requested_total", "POST /run-agents requests received")
RUNS_ACCEPTED = Counter("ragpoc_runs_accepted_total", "Runs admitted (202)")
RUNS_REPLAYED = Counter(
    "ragpoc_runs_replayed_total",
    "Requests answered with the run an earlier request with the same Idempotency-Key started",
)
RUNS_REJECTED = Counter(
    "ragpoc_runs_rejected_total",
    "Runs refused with 409, by the duplicate-protection layer that caught them",
    ["layer"],
)
for _layer in CONFLICT_LAYERS:
    RUNS_REJECTED.labels(layer=_layer)
LIMITED_REQUESTS = Counter(
    "ragpoc_requests_limited_total",
    "Requests refused by a resource limit: sse_full and wait_full (503), run_rate (429)",
    ["reason"],
)
for _reason in ("sse_full", "wait_full", "run_rate"):
    LIMITED_REQUESTS.labels(reason=_reason)


class _RunOutcomes(Collector):
    def __init__(self, snapshot: dict[str, float]) -> None:
        self.snapshot = snapshot

    def collect(self):  # type: ignore[no-untyped-def]
        s = self.snapshot
        completed = CounterMetricFamily(
            "ragpoc_runs_completed",
            "Runs that completed (all runners)",
            value=s.get("completed", 0),
        )
        failed = CounterMetricFamily(
            "ragpoc_runs_failed", "Runs that failed (all runners)", value=s.get("failed", 0)
        )
        buckets = [(str(b), s.get(f"le:{b}", 0)) for b in DURATION_BUCKETS]
        buckets.append(("+Inf", s.get("count", 0)))
        duration = HistogramMetricFamily(
            "ragpoc_run_duration_seconds",
            "Duration of finished runs, from start to completion or failure (all runners)",
            buckets=buckets,
            sum_value=s.get("sum", 0.0),
        )
        yield from (completed, failed, duration)


async def _bounded(read: Awaitable[T], what: str) -> T | None:
    """`read`'s result, or None when it fails or outlasts SCRAPE_READ_TIMEOUT_S."""
    try:
        async with asyncio.timeout(SCRAPE_READ_TIMEOUT_S):
            return await read
    except (RedisError, OSError, TimeoutError) as exc:  # this scrape goes without them
        log.warning("metrics.read_failed", what=what, error=f"{type(exc).__name__}: {exc}")
        return None


async def metrics_endpoint(request: Request) -> Response:
    ctx = context_of(request)
    scraped = CollectorRegistry()
    stats = await _bounded(RunStats(ctx.redis, ctx.keys).snapshot(), "run_stats")
    if stats is not None:
        scraped.register(_RunOutcomes(stats))
    cluster = await _bounded(read_cluster(ctx.redis, ctx.keys), "cluster")
    scraped.register(ClusterCollector(cluster, ctx.hub.clients))
    body = generate_latest(REGISTRY) + generate_latest(scraped)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
