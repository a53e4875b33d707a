"""The real Prometheus against a real `ragpoc up` stack: it scrapes the gateway, the runner, the
projector and the ingestor on the ports the test gives them, loads the alert rules, sees a 409
through ragpoc_runs_rejected_total, and holds a series for every metric the Grafana dashboard
and the alert rules query.

Prometheus (Debian's `prometheus` package) runs on a free port with its own TSDB folder and is
stopped by its PID at the end; without the binary this skips (fails under
RAGPOC_REQUIRE_SERVICES=1, as in CI, which installs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, unavailable
from tests.e2e.processes import wait_healthy
from tests.eventually import eventually_sync
from tests.promql_names import metric_names
from tests.stackproc import ragpoc_up

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ragpoc-dashboard.json"


def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        unavailable("the prometheus binary is not installed (apt-get install prometheus)")
        raise AssertionError  # unreachable: unavailable() skips or fails
    return binary


def scrape_config(targets: dict[str, int]) -> dict[str, Any]:
    """Every second, each job on 127.0.0.1 at its port, with the project's alert rules."""
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()
        ],
    }


@contextmanager
def prometheus(folder: Path, targets: dict[str, int]) -> Iterator[str]:
    """A Prometheus process scraping `targets`; its base URL once ready. Stopped by PID."""
    binary = prometheus_binary()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alerts.yml").write_text(RULES.read_text())
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets)))
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = wait_healthy(
            "prometheus", process, port, lambda: log.read_text()[-3000:], path="/-/ready"
        )
        yield url
    finally:
        process.terminate()  # by its PID: only the process this test started
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def dashboard_metrics() -> set[str]:
    names: set[str] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            names |= metric_names(target["expr"])
    return names


def rule_metrics() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())["groups"]
    return {name for g in rules for rule in g["rules"] for name in metric_names(rule["expr"])}


def test_prometheus_scrapes_the_stack_sees_a_409_and_every_queried_metric(
    tmp_path: Path,
) -> None:
    ports = {job: free_port() for job in ("runner", "projector", "ingestor")}
    env = {
        "RAGPOC_DEV": "1",  # hold_seconds, so the second run meets the first one's lock
        "RUNNER_METRICS_PORT": str(ports["runner"]),
        "PROJECTOR_METRICS_PORT": str(ports["projector"]),
        "INGESTOR_PORT": str(ports["ingestor"]),
    }
    with ragpoc_up(tmp_path / "data", env) as stack:
        ports["gateway"] = int(stack.base_url.rsplit(":", 1)[1])
        with prometheus(tmp_path / "prometheus", ports) as url:
            with httpx.Client(base_url=stack.base_url, timeout=10) as api:
                task_id = api.post("/api/tasks", json={"title": "Why is the sky blue?"}).json()
                body = {"id": task_id["id"], "hold_seconds": 3}
                first = api.post("/run-agents", json=body)
                second = api.post("/run-agents", json=body)
            assert (first.status_code, second.status_code) == (202, 409), second.text

            def refused() -> float:
                result = query(url, "sum(ragpoc_runs_rejected_total)")
                return float(result[0]["value"][1]) if result else 0.0

            eventually_sync(
                refused,
                until=lambda total: total >= 1,
                within=30,
                interval=0.5,
                message="Prometheus never saw the 409",
            )

            def projected() -> float:
                result = query(url, 'sum(ragpoc_projector_entries_total{outcome="applied"})')
                return float(result[0]["value"][1]) if result else 0.0

            eventually_sync(  # the task's and the runs' events, folded by the projector
                projected,
                until=lambda total: total >= 1,
                within=30,
                interval=0.5,
                message="Prometheus never saw the projector fold an event",
            )

            def targets_up() -> dict[str, str]:
                return {r["metric"]["job"]: r["value"][1] for r in query(url, "up")}

            eventually_sync(
                targets_up,
                until=lambda up: up == dict.fromkeys(ports, "1"),
                within=20,
                interval=0.5,
                message=lambda: f"not every target is up: {targets_up()}",
            )

            queried = dashboard_metrics() | rule_metrics()

            def missing() -> set[str]:
                return {m for m in queried if not query(url, f'count({{__name__="{m}"}})')}

            eventually_sync(
                missing,
                until=lambda gone: not gone,
                within=20,
                interval=1,
                message=lambda: f"queried but not scraped: {sorted(missing())}",
            )

            rules = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            loaded = {rule["name"] for group in rules for rule in group["rules"]}
            assert {"RunsRejectedOften", "NoLiveRunner", "ProjectorLagging"} <= loaded
