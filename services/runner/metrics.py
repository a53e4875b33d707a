"""The runner's own Prometheus metrics, served on RUNNER_METRICS_PORT when it is set.

Cluster-wide run outcomes are on every gateway's /metrics (runners count them in Redis); these
are this process's: what it has in hand and how its runs ended, plus the process collectors.
"""

from __future__ import annotations

import structlog
from prometheus_client import Counter, Gauge, start_http_server

from libs.common import Settings

__all__ = ["RUNNER_SLOTS", "RUNS_FINISHED", "RUNS_IN_PROGRESS", "serve_metrics"]

log = structlog.get_logger(__name__)

RUNS_IN_PROGRESS = Gauge("ragpoc_runner_runs_in_progress", "Runs this runner is executing now")
RUNNER_SLOTS = Gauge(
    "ragpoc_runner_slots", "Runs this runner can execute at once (RAGPOC_RUNNER_CONCURRENCY)"
)
RUNS_FINISHED = Counter(
    "ragpoc_runner_runs_finished_total",
    "Runs this runner ended, by outcome (completed, failed, superseded)",
    ["outcome"],
)
for _outcome in ("completed", "failed", "superseded"):
    RUNS_FINISHED.labels(outcome=_outcome)


def serve_metrics(settings: Settings) -> None:
    """Serve /metrics on RUNNER_METRICS_PORT (a background thread); 0 leaves it off."""
    RUNNER_SLOTS.set(settings.runner_concurrency)
    if settings.runner_metrics_port:
        start_http_server(settings.runner_metrics_port, addr=settings.host)
        log.info("runner.metrics", url=f"http://{settings.host}:{settings.runner_metrics_port}/")
