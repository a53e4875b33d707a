"""The gateway's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["RUNS_REQUESTED", "TASKS_CREATED", "metrics_endpoint"]

TASKS_CREATED = Counter("ragpoc_tasks_created_total", "Tasks created through the gateway")
RUNS_REQUESTED = Counter("ragpoc_runs_requested_total", "POST /run-agents requests received")


async def metrics_endpoint(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
