""".github/workflows/ci.yml, checked without GitHub: against the GitHub-workflow JSON schema (the
copy check-jsonschema vendors), then that it runs what users on GitHub rely on: `make test` with
Valkey and PostgreSQL, the manual's smoke scripts against `make up`, and the compose stack."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.schema_check import check_builtin_schema

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def check_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return check_builtin_schema("vendor.github-workflows", path)


def workflow() -> dict[Any, Any]:
    # YAML 1.1 reads the key `on` as True: look it up under both
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def job(name: str) -> dict[str, Any]:
    found: dict[str, Any] = workflow()["jobs"][name]
    return found


def commands(name: str) -> list[str]:
    """The `run:` scripts of a job's steps, in order."""
    return [step["run"] for step in job(name)["steps"] if "run" in step]


def position(name: str, text: str) -> int:
    """Index of the first step of job `name` whose script contains `text` (fails if none)."""
    scripts = commands(name)
    hits = [i for i, script in enumerate(scripts) if text in script]
    assert hits, f"job {name} never runs {text!r}"
    return hits[0]


def test_the_workflow_follows_the_github_schema() -> None:
    checked = check_schema(WORKFLOW)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_schema_check_rejects_a_malformed_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "ci.yml"
    bad.write_text("on: push\njobs:\n  test:\n    steps:\n      - run: make test\n")
    assert check_schema(bad).returncode != 0  # a job without runs-on


def test_it_runs_on_pushes_and_pull_requests() -> None:
    triggers: dict[str, object] = workflow().get("on") or workflow()[True]
    assert {"push", "pull_request"} <= set(triggers)


def test_make_test_runs_with_valkey_and_postgres_service_containers() -> None:
    test = job("test")
    images = {name: service["image"] for name, service in test["services"].items()}
    assert any(image.startswith(("valkey/valkey:", "redis:")) for image in images.values())
    assert any(image.startswith("postgres:") for image in images.values())
    assert test["env"]["RAGPOC_REQUIRE_SERVICES"] == "1"
    assert test["env"]["REDIS_URL"].startswith("redis://127.0.0.1:6379")
    assert test["env"]["RAGPOC_TEST_POSTGRES_URL"].startswith("postgresql://")
    assert "make test" in commands("test")


def test_the_smoke_scripts_run_against_make_up_after_the_tests() -> None:
    tested = position("test", "make test")
    up = position("test", "make up")
    assert tested < up
    assert up < position("test", "scripts/run_lock_smoke.py")
    assert up < position("test", "scripts/run_e2e_integration.py --mock")


def test_the_compose_job_builds_starts_and_smoke_tests_the_stack() -> None:
    built = position("compose", "docker compose build")
    started = position("compose", "docker compose up -d --wait")
    smoke = position("compose", "scripts/run_lock_smoke.py --compose")
    assert built < started < smoke
    assert "docker compose down" in commands("compose")[-1]


def test_the_scripts_the_workflow_runs_exist() -> None:
    for name in ("test", "compose"):
        for script in commands(name):
            for word in script.split():
                if word.startswith("scripts/"):
                    assert (ROOT / word).is_file(), f"{name} runs missing {word}"
