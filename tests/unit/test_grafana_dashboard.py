"""deploy/grafana/ragpoc-dashboard.json: valid dashboard JSON on the `datasource` variable, with
the panels the Operation Manual promises, PromQL that Prometheus parses (through `promtool check
rules`), and only metric names the services expose: the gateway's /metrics page (in process,
over a real Valkey, with the command streams' groups created, the runners' on every partition)
together with the runner's, the projector's and the ingestor's metrics, which share this
process's default registry.

The e2e Prometheus test checks the same names against what a real Prometheus scraped from a
real stack, service by service."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from starlette.testclient import TestClient

from libs.common import Settings
from libs.events import INGESTORS_GROUP, RUNNERS_GROUP, Keys
from services.gateway.app import create_app
from tests.conftest import unavailable
from tests.promql_names import exposed_samples, metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "ragpoc-dashboard.json"
# what the issue asks the dashboard to show, by the metric that shows it
PROMISED = {
    "ragpoc_runs_accepted_total": "runs accepted",
    "ragpoc_runs_rejected_total": "409s by layer",
    "ragpoc_runs_completed_total": "run outcomes",
    "ragpoc_runs_failed_total": "run outcomes",
    "ragpoc_run_duration_seconds_bucket": "duration quantiles",
    "ragpoc_stream_lag": "consumer lag",
    "ragpoc_projector_lag_seconds": "projector lag",
    "ragpoc_dead_letters": "dead letters",
    "ragpoc_workers_live": "live runners",
    "ragpoc_sse_clients": "SSE clients",
    "ragpoc_runner_runs_in_progress": "runner slots in use",
    "ragpoc_runner_slots": "runner slots in use",
}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every query of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def queried_metrics() -> set[str]:
    return {name for _title, expr in queries() for name in metric_names(expr)}


def test_every_panel_queries_prometheus_through_the_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"]
    [variable] = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    graphs = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert len(graphs) >= 10
    for panel in graphs:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])


def test_the_dashboard_shows_what_was_asked_for() -> None:
    missing = {name: topic for name, topic in PROMISED.items() if name not in queried_metrics()}
    assert missing == {}


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    binary = shutil.which("promtool")
    if binary is None:
        unavailable("promtool is not installed (apt-get install prometheus)")
        return
    rules = [
        {"record": f"panel:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_title, expr) in enumerate(queries())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [binary, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def exposed(valkey_server: Any, tmp_path: Path) -> set[str]:
    """Sample names of the gateway's /metrics in this process (which also carries the runner's,
    the projector's and the ingestor's metrics: their modules register in the same registry)."""
    import services.ingestor.app
    import services.projector.metrics
    import services.runner.metrics  # noqa: F401

    keys = Keys(f"t{uuid.uuid4().hex[:10]}", 4)
    client = redis.Redis.from_url(valkey_server.connection_url)
    for stream, group in (
        *((stream, RUNNERS_GROUP) for stream in keys.run_command_streams()),
        (keys.ingest_commands, INGESTORS_GROUP),
    ):
        client.xgroup_create(stream, group, id="0", mkstream=True)
    settings = Settings(
        redis_url=valkey_server.connection_url,
        database_url=f"sqlite:///{tmp_path / 'ragpoc.db'}",
        namespace=keys.namespace,
        partitions=keys.partitions,
    )
    try:
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as gateway:
            page = gateway.get("/metrics")
    finally:
        for key in client.scan_iter(match=f"{keys.namespace}:*"):
            client.delete(key)
        client.close()
    assert page.status_code == 200
    return exposed_samples(page.text)


def test_every_metric_the_dashboard_queries_is_exposed(exposed: set[str]) -> None:
    scraped_by_prometheus = {"up"}  # Prometheus' own, per target
    assert queried_metrics() - exposed - scraped_by_prometheus == set()
