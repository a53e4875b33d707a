"""deploy/prometheus: the scrape config and alert rules pass `promtool check`, every alert has a
firing and a quiet case in alerts_test.yml and those pass `promtool test rules`, the scrape
targets are the compose services' metrics ports, and the rules name only metrics that exist.

promtool comes with Debian's `prometheus` package; without it these skip (and fail under
RAGPOC_REQUIRE_SERVICES=1, as in CI, which installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import unavailable
from tests.promql_names import metric_names

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts_test.yml"
# what the services expose (checked against live /metrics pages by the dashboard test and the
# e2e Prometheus test); `up` is Prometheus' own
EXPOSED_ELSEWHERE = {"up", "process_max_fds"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        unavailable("promtool is not installed (apt-get install prometheus)")
        raise AssertionError  # unreachable: unavailable() skips or fails
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alerts() -> dict[str, str]:
    """alert name -> expression"""
    return {rule["alert"]: rule["expr"] for g in load(RULES)["groups"] for rule in g["rules"]}


def test_the_config_and_its_rule_file_pass_promtool_check_config() -> None:
    result = promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_the_alert_rules_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expectation_makes_promtool_test_rules_fail(tmp_path: Path) -> None:
    """The unit tests can fail: the same file expecting the quiet cases to fire does."""
    broken = load(RULE_TESTS)
    for case in broken["tests"]:
        for check in case["alert_rule_test"]:
            if not check.get("exp_alerts"):
                check["exp_alerts"] = [{"exp_labels": {"severity": "warning"}}]
    (tmp_path / "alerts.yml").write_text(RULES.read_text())
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(broken))
    result = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load(RULE_TESTS)["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = set(alerts())
    assert names >= {
        "RunsRejectedOften",
        "DeadLettersGrowing",
        "CommandBacklog",
        "CommandPendingTooLong",
        "NoLiveRunner",
        "ProjectorLagging",
        "SSEClientsNearCap",
    }
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a quiet case"


def test_the_rules_read_only_ragpoc_metrics_and_process_or_scrape_metrics() -> None:
    for name, expr in alerts().items():
        for metric in metric_names(expr):
            assert metric.startswith("ragpoc_") or metric in EXPOSED_ELSEWHERE, (name, metric)


def test_every_service_is_scraped_where_compose_serves_its_metrics() -> None:
    compose = load(ROOT / "docker-compose.yml")["services"]
    jobs = {job["job_name"]: job for job in load(CONFIG)["scrape_configs"]}
    assert set(jobs) >= {"gateway", "runner", "projector", "ingestor"}
    assert jobs["gateway"]["static_configs"][0]["targets"] == [
        f"mcp:{compose['mcp']['environment']['GATEWAY_PORT']}"
    ]
    worker = compose["worker"]
    [discovery] = jobs["runner"]["dns_sd_configs"]
    assert (discovery["names"], discovery["type"]) == (["worker"], "A")
    assert str(discovery["port"]) == worker["environment"]["RUNNER_METRICS_PORT"]
    assert str(discovery["port"]) in [str(port) for port in worker.get("expose", [])]
    assert worker["deploy"]["replicas"] == 2  # why the runners are found through DNS
    assert jobs["ingestor"]["static_configs"][0]["targets"] == [
        f"ingestor:{compose['ingestor'].get('environment', {}).get('INGESTOR_PORT', '8002')}"
    ]


def test_the_projector_is_scraped_on_the_port_compose_gives_it() -> None:
    compose = load(ROOT / "docker-compose.yml")["services"]
    [target] = next(
        job for job in load(CONFIG)["scrape_configs"] if job["job_name"] == "projector"
    )["static_configs"][0]["targets"]
    port = compose["projector"]["environment"]["PROJECTOR_METRICS_PORT"]
    assert target == f"projector:{port}"
