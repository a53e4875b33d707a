"""RUNNER_METRICS_PORT serves the runner's own metrics."""

from __future__ import annotations

import httpx

from libs.common import load_settings
from services.runner.metrics import RUNS_FINISHED, serve_metrics
from tests.conftest import free_port


def test_the_runner_serves_its_metrics_on_the_configured_port() -> None:
    port = free_port()
    serve_metrics(load_settings({"RUNNER_METRICS_PORT": str(port)}))  # listening on return
    RUNS_FINISHED.labels(outcome="completed").inc()

    body = httpx.get(f"http://127.0.0.1:{port}/metrics").text

    assert "ragpoc_runner_runs_in_progress" in body
    assert 'ragpoc_runner_runs_finished_total{outcome="completed"}' in body
