"""`ragpoc up` as a user runs it: real processes, the thin path over HTTP and SSE, then Ctrl-C
leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.eventually import eventually_sync
from tests.stackproc import UpProcess, alive, ragpoc_up

pytestmark = pytest.mark.e2e


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return found
    for child in map(int, children):
        found |= {child, *descendants(child)}
    return found


@pytest.fixture(params=["embedded-valkey", "external-redis", "embedded-cluster"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UpProcess]:
    extra = {"RAGPOC_LOG_FORMAT": "json"}
    if request.param == "embedded-cluster":  # 3 masters and 3 replicas of its own
        # dev mode lets the lock smoke hold its run: the pair it sends then always conflicts
        # (a run on this fast path can end before the second request, which then gets 202)
        extra["RAGPOC_DEV"] = "1"
        with ragpoc_up(tmp_path / "data", extra, args=["--cluster"]) as running:
            yield running
        return
    if request.param == "external-redis":
        # the machine's Redis when REDIS_URL is set, else a Valkey the stack did not start
        external = os.environ.get("REDIS_URL") or request.getfixturevalue("valkey_server")
        extra["REDIS_URL"] = external if isinstance(external, str) else external.connection_url
        extra["RAGPOC_NAMESPACE"] = f"e2e{uuid.uuid4().hex[:8]}"
    with ragpoc_up(tmp_path / "data", extra) as running:
        yield running


def read_sse_until(url: str, last_type: str, timeout: float = 30) -> list[dict[str, str]]:
    frames: list[dict[str, str]] = []
    current: dict[str, str] = {}
    with httpx.stream("GET", url, timeout=timeout) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "":
                if "event" in current:
                    frames.append(current)
                    if current["event"] == last_type:
                        return frames
                current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = value
    raise AssertionError(f"stream ended before {last_type}: {frames}")


def test_the_thin_path_and_the_lock_smoke_through_real_processes_then_a_clean_ctrl_c(
    stack: UpProcess,
) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=10) as api:
        check_thin_path(api, stack)
    smoke = run_script("scripts/run_lock_smoke.py", stack.base_url)
    assert "PASS: " in smoke
    assert "one run accepted (202), one refused (409" in smoke
    rag = run_script("scripts/run_e2e_integration.py", stack.base_url)  # ingest, search, run
    assert "OK: the retrieved text is in the run's response" in rag

    children = descendants(stack.process.pid)
    assert len(children) >= 5  # mockai, projector, ingestor, runner, gateway (+ valkey)
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(timeout=30) == 0
    survivors = [pid for pid in children if alive(pid)]
    assert survivors == [], f"left behind: {survivors}\n{stack.log.read_text()[-3000:]}"


def run_script(script: str, base_url: str) -> str:
    """What `script --base-url base_url` prints; it must exit 0."""
    done = subprocess.run(
        [sys.executable, script, "--base-url", base_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def check_thin_path(api: httpx.Client, stack: UpProcess) -> None:
    task = api.post(
        "/api/tasks", json={"title": "Why is the sky blue?", "description": "One line."}
    ).json()
    run = api.post("/run-agents", json={"id": task["id"]})
    assert run.status_code == 202, run.text

    frames = read_sse_until(stack.base_url + run.json()["events_url"], "run.completed")
    types = [f["event"] for f in frames]
    assert types[:4] == ["task.created", "lock.acquired", "run.requested", "run.started"]
    completed = json.loads(frames[-1]["data"])
    assert completed["run_id"] == run.json()["run_id"]
    assert "blue" in completed["answer"]
    ids = [f["id"] for f in frames]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))

    eventually_sync(
        lambda: api.get(f"/api/tasks/{task['id']}").json()["status"] == "done",
        interval=0.05,
        message="task status never reached done",
    )

    # resume: only what came after the given id
    resumed = read_sse_until(
        f"{stack.base_url}/events/tasks/{task['id']}?last_event_id={ids[3]}", "run.completed"
    )
    assert [f["id"] for f in resumed] == ids[4:]


def test_the_e2e_integration_script_passes_in_mock_mode() -> None:
    """Ingest -> search -> run -> answer with sources, through a stack the script starts."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "REDIS_URL")}
    result = subprocess.run(
        [sys.executable, "scripts/run_e2e_integration.py", "--mock"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: the retrieved text is in the run's response" in result.stdout
    assert "cobalt" in result.stdout
