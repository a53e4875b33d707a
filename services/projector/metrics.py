"""The projector's own Prometheus metrics, served on PROJECTOR_METRICS_PORT when it is set.

How far it is behind the logs is on every gateway's /metrics (`ragpoc_projector_lag_seconds`,
read from Redis, so it keeps rising while the projector is down); these say what this process
did: entries folded or parked, steps that failed, and when it last committed.
"""

from __future__ import annotations

import time

import structlog
from prometheus_client import Counter, Gauge, start_http_server

from libs.common import Settings

__all__ = ["ENTRIES", "LAST_STEP", "STEP_FAILURES", "count_step", "serve_metrics"]

log = structlog.get_logger(__name__)

ENTRIES = Counter(
    "ragpoc_projector_entries_total",
    "Partition-log entries this projector moved past, by outcome (applied, parked)",
    ["outcome"],
)
for _outcome in ("applied", "parked"):
    ENTRIES.labels(outcome=_outcome)
STEP_FAILURES = Counter(
    "ragpoc_projector_step_failures_total",
    "Projector steps that failed (Redis or the database away, or a bug) and were retried",
)
LAST_STEP = Gauge(
    "ragpoc_projector_last_step_timestamp_seconds",
    "When this projector last committed events (applied or parked), Unix time",
)


def count_step(applied: int, parked: int) -> None:
    """One partition's share of a step that committed."""
    ENTRIES.labels(outcome="applied").inc(applied)
    ENTRIES.labels(outcome="parked").inc(parked)
    LAST_STEP.set(time.time())


def serve_metrics(settings: Settings) -> None:
    """Serve /metrics on PROJECTOR_METRICS_PORT (a background thread); 0 leaves it off."""
    if settings.projector_metrics_port:
        start_http_server(settings.projector_metrics_port, addr=settings.host)
        url = f"http://{settings.host}:{settings.projector_metrics_port}/"
        log.info("projector.metrics", url=url)
