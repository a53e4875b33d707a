"""`ragpoc up` rides out what an orchestrator would: every Redis connection cut (CLIENT KILL, what
a restart, failover or network blip does), a service killed (it is started again), its Valkey
killed (started again on the same port, with its data); and stops the stack, with exit code 1
and a line naming the service, only on a crash loop. Ctrl-C still leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from libs.events import Keys
from tests.eventually import eventually_sync
from tests.stackproc import UpProcess, alive, children, ragpoc_up

pytestmark = pytest.mark.e2e


def pid_of(up: UpProcess, service: str) -> int:
    [pid] = [pid for pid, name in children(up.process.pid).items() if name == service]
    return pid


def restarted(up: UpProcess, service: str, old_pid: int) -> int:
    """The pid of `service` once the supervisor has started it again."""

    def new_pid() -> int | None:
        pids = [p for p, name in children(up.process.pid).items() if name == service]
        return next((p for p in pids if p != old_pid), None)

    pid = eventually_sync(
        new_pid, within=30, interval=0.1, message=lambda: f"{service} not restarted:\n{tail(up)}"
    )
    assert pid is not None
    return pid


def tail(up: UpProcess) -> str:
    return up.log.read_text(errors="replace")[-4000:]


def redis_url(data_dir: Path) -> str:
    url: str = json.loads((data_dir / "stack.json").read_text())["redis_url"]
    return url


def stream_length(url: str, stream: str) -> int | None:
    """XLEN, or None while the server does not answer yet."""
    try:
        with redis.Redis.from_url(url) as admin:
            return int(admin.xlen(stream))
    except redis.ConnectionError:
        return None


def run_to_completion(
    api: httpx.Client, up: UpProcess, title: str, *, patient: bool = False
) -> dict[str, object]:
    """Create a task and run it with ?wait; the 200 answer. `patient`: creating is retried
    until the gateway answers 201 (after an outage of Redis itself, requests fail meanwhile)."""

    def created() -> int | None:
        try:
            reply = api.post("/api/tasks", json={"title": title})
        except httpx.HTTPError:
            return None
        return int(reply.json()["id"]) if reply.status_code == 201 else None

    if patient:
        task_id = eventually_sync(created, within=30, interval=0.2, message=lambda: tail(up))
    else:
        reply = api.post("/api/tasks", json={"title": title})
        assert reply.status_code == 201, f"{reply.text}\n{tail(up)}"
        task_id = int(reply.json()["id"])
    eventually_sync(
        lambda: api.get(f"/api/tasks/{task_id}").status_code == 200,
        within=30,
        interval=0.1,
        message=lambda: f"task never projected:\n{tail(up)}",
    )
    reply = api.post("/run-agents", params={"wait": 30}, json={"id": task_id})
    assert reply.status_code == 200, f"{reply.text}\n{tail(up)}"
    body: dict[str, object] = reply.json()
    assert "blue" in str(body["answer"])
    return body


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def stack(data_dir: Path) -> Iterator[UpProcess]:
    env = {"RAGPOC_LOG_FORMAT": "json", "RAGPOC_CONSUMER_BLOCK_MS": "200"}
    with ragpoc_up(data_dir, env) as running:
        yield running


def stop_leaves_nothing(up: UpProcess, pids: set[int]) -> None:
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=30) == 0, tail(up)
    survivors = [pid for pid in pids if alive(pid)]
    assert survivors == [], f"left behind: {survivors}\n{tail(up)}"


def test_the_stack_survives_client_kill_a_killed_runner_and_a_killed_valkey(
    stack: UpProcess, data_dir: Path
) -> None:
    url = redis_url(data_dir)
    with httpx.Client(base_url=stack.base_url, timeout=40) as api:
        with redis.Redis.from_url(url) as admin:
            assert int(admin.execute_command("CLIENT", "KILL", "TYPE", "normal")) >= 3
        first = run_to_completion(api, stack, "Why is the sky blue after CLIENT KILL?")
        ingested = api.post(
            "/api/ingest", params={"wait": 30}, json={"text": "Storms turn the sky cobalt."}
        )
        assert ingested.status_code == 200, ingested.text  # the ingestor's consumer is back

        runner = pid_of(stack, "runner")
        os.kill(runner, signal.SIGKILL)
        restarted(stack, "runner", runner)
        run_to_completion(api, stack, "Why is the sky blue after the runner died?")

        valkey = pid_of(stack, "valkey")
        os.kill(valkey, signal.SIGKILL)
        restarted(stack, "valkey", valkey)
        assert redis_url(data_dir) == url  # same port: the services find it where it was
        # its AOF kept the data: the first task's stream is there once it answers
        first_task = Keys("ragpoc", 16).task_events(int(str(first["task_id"])))
        kept = eventually_sync(
            lambda: stream_length(url, first_task), until=lambda n: n is not None, within=15
        )
        assert kept is not None
        assert kept > 0, tail(stack)
        run_to_completion(api, stack, "Why is the sky blue after Valkey died?", patient=True)

    stop_leaves_nothing(stack, set(children(stack.process.pid)))


def test_a_crash_loop_stops_the_stack_with_exit_code_1(data_dir: Path) -> None:
    env = {"RAGPOC_LOG_FORMAT": "json", "RAGPOC_UP_CRASH_LIMIT": "2"}
    with ragpoc_up(data_dir, env) as up:
        runner = pid_of(up, "runner")
        os.kill(runner, signal.SIGKILL)
        runner = restarted(up, "runner", runner)
        pids = set(children(up.process.pid))
        os.kill(runner, signal.SIGKILL)  # the second exit within the window: a crash loop
        assert up.process.wait(timeout=30) == 1, tail(up)
        lines = [json.loads(line) for line in tail(up).splitlines() if line.startswith("{")]
        assert {"event": "up.crash_loop", "service": "runner"}.items() <= next(
            line for line in lines if line["event"] == "up.crash_loop"
        ).items()
        survivors = [pid for pid in pids if alive(pid)]
        assert survivors == [], f"left behind: {survivors}\n{tail(up)}"
