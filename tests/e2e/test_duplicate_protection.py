"""Duplicate protection under real concurrency: several gateway and runner processes, a real
Valkey and a real database. A task never runs twice at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from libs.events import Keys
from services.cli.valkey_cluster import LocalCluster
from tests.e2e.processes import Cluster
from tests.eventually import eventually_sync
from tests.rawhttp import RawResponse, request

pytestmark = pytest.mark.e2e


class Deployment:
    def __init__(self, cluster: Cluster, keys: Keys, redis_url: str, on_cluster: bool) -> None:
        self.cluster = cluster
        self.keys = keys
        self.redis: redis.Redis = (
            RedisCluster.from_url(redis_url, decode_responses=True)
            if on_cluster
            else redis.Redis.from_url(redis_url, decode_responses=True)
        )
        self.gateways: list[str] = []

    def events(self, task_id: int) -> list[dict[str, Any]]:
        entries = self.redis.xrange(self.keys.task_events(task_id))
        return [json.loads(fields["data"]) for _id, fields in entries]  # type: ignore[union-attr]

    def wait_for_event(
        self, task_id: int, type_: str, run_id: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for event in self.events(task_id):
                if event["type"] == type_ and run_id in (None, event["run_id"]):
                    return event
            return None

        event = eventually_sync(
            found,
            within=timeout,
            interval=0.05,
            message=lambda: f"no {type_} for task {task_id}:\n{self.cluster.log_tail()}",
        )
        assert event is not None
        return event

    def create_task(self, title: str = "Why is the sky blue?") -> int:
        reply = httpx.post(f"{self.gateways[0]}/api/tasks", json={"title": title}, timeout=10)
        assert reply.status_code == 201, reply.text
        return int(reply.json()["id"])

    def run_held_on_one_runner(
        self, *, min_idle_ms: int, hold_seconds: float
    ) -> tuple[subprocess.Popen[bytes], int, dict[str, Any]]:
        """One gateway and one runner with 1-second lock leases, and a task whose run holds it
        for `hold_seconds`: the runner process, the task and the run, once the run started."""
        cluster = self.cluster
        cluster.env |= {
            "RAGPOC_LOCK_TTL_MS": "1000",
            "RAGPOC_CONSUMER_MIN_IDLE_MS": str(min_idle_ms),
        }
        self.gateways = cluster.start_http("gateway", "GATEWAY_PORT")
        runner = cluster.start("runner")
        task_id = self.create_task()
        body = {"id": task_id, "hold_seconds": hold_seconds}
        run: dict[str, Any] = httpx.post(f"{self.gateways[0]}/run-agents", json=body).json()
        self.wait_for_event(task_id, "run.started", run["run_id"])
        return runner, task_id, run


@pytest.fixture
def deployment(valkey_server: Any, database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    """Runs on SQLite and on PostgreSQL."""
    yield from _deploy(valkey_server.connection_url, database_url, tmp_path)


@pytest.fixture
def sqlite_deployment(valkey_server: Any, tmp_path: Path) -> Iterator[Deployment]:
    """SQLite only, for the slower process-level scenarios (keeps the suite short)."""
    yield from _deploy(valkey_server.connection_url, _sqlite(tmp_path), tmp_path)


@pytest.fixture
def cluster_deployment(valkey_cluster: LocalCluster, tmp_path: Path) -> Iterator[Deployment]:
    """On a Valkey Cluster of 3 masters and 3 replicas (SQLite read models)."""
    yield from _deploy(valkey_cluster.url, _sqlite(tmp_path), tmp_path, on_cluster=True)


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'readmodels.db'}"


def _deploy(
    redis_url: str, database_url: str, tmp_path: Path, on_cluster: bool = False
) -> Iterator[Deployment]:
    namespace = f"dup{uuid.uuid4().hex[:8]}"
    keys = Keys(namespace, 16)
    cluster = Cluster.create(
        tmp_path / "logs",
        REDIS_URL=redis_url,
        RAGPOC_REDIS_CLUSTER="1" if on_cluster else "0",
        DATABASE_URL=database_url,
        RAGPOC_NAMESPACE=namespace,
        RAGPOC_DATA_DIR=str(tmp_path / "data"),
        RAGPOC_DEV="1",
    )
    [mockai] = cluster.start_http("mockai", "MOCKAI_PORT")
    cluster.env["OPENAI_BASE_URL"] = f"{mockai}/v1"
    [cluster.env["INGESTOR_URL"]] = cluster.start_http("ingestor", "INGESTOR_PORT")
    cluster.start("projector")
    running = Deployment(cluster, keys, redis_url, on_cluster)
    try:
        yield running
    finally:
        cluster.stop()
        running.redis.close()


async def burst(urls: list[str], task_ids: list[int], per_task: int) -> list[RawResponse]:
    """per_task concurrent POST /run-agents for every task, spread over the gateways."""
    return await asyncio.gather(
        *(
            request("POST", f"{urls[i % len(urls)]}/run-agents", {"id": t, "hold_seconds": 30})
            for i in range(per_task)
            for t in task_ids
        )
    )


def test_200_concurrent_requests_over_4_gateways_admit_exactly_one(
    deployment: Deployment,
) -> None:
    admit_exactly_one_of_200(deployment)


def test_on_a_cluster_200_concurrent_requests_over_4_gateways_admit_exactly_one(
    cluster_deployment: Deployment,
) -> None:
    admit_exactly_one_of_200(cluster_deployment)


def admit_exactly_one_of_200(deployment: Deployment) -> None:
    deployment.gateways = deployment.cluster.start_http("gateway", "GATEWAY_PORT", count=4)
    deployment.cluster.start("runner")
    task_id = deployment.create_task()

    replies = asyncio.run(burst(deployment.gateways, [task_id], 200))

    assert Counter(r.status for r in replies) == {202: 1, 409: 199}
    [accepted] = [r.json() for r in replies if r.status == 202]
    refused = [r.json()["error"] for r in replies if r.status == 409]
    assert {e["holder_run_id"] for e in refused} == {accepted["run_id"]}
    assert all(e["expires_at"] > time.time() for e in refused)
    deployment.wait_for_event(task_id, "run.started")
    types = Counter(e["type"] for e in deployment.events(task_id))
    assert types["run.started"] == 1
    assert types["lock.acquired"] == 1
    assert types["lock.conflict"] == 199
    history = httpx.get(f"{deployment.gateways[1]}/api/tasks/{task_id}/locks?limit=500").json()
    kinds = Counter(item["type"] for item in history["locks"])
    assert kinds == {"lock.acquired": 1, "lock.conflict": 199}
    ids = [tuple(map(int, item["id"].split("-"))) for item in history["locks"]]
    assert ids == sorted(ids, reverse=True)  # newest first


def test_20_tasks_hit_at_once_each_admit_exactly_one_run(sqlite_deployment: Deployment) -> None:
    deployment = sqlite_deployment
    deployment.gateways = deployment.cluster.start_http("gateway", "GATEWAY_PORT", count=4)
    deployment.cluster.start("runner")
    task_ids = [deployment.create_task(f"task {n}") for n in range(20)]

    replies = asyncio.run(burst(deployment.gateways, task_ids, 200))

    by_task: dict[int, Counter[int]] = {t: Counter() for t in task_ids}
    for index, reply in enumerate(replies):
        by_task[task_ids[index % len(task_ids)]][reply.status] += 1
    assert all(counts == {202: 1, 409: 199} for counts in by_task.values()), by_task
    for task_id in task_ids:
        types = Counter(e["type"] for e in deployment.events(task_id))
        assert (types["lock.acquired"], types["lock.conflict"]) == (1, 199)
        assert types["run.started"] <= 1  # one runner works through the 20 held runs in turn


def test_after_a_run_completes_the_task_runs_again_with_a_larger_fence(
    sqlite_deployment: Deployment,
) -> None:
    deployment = sqlite_deployment
    deployment.gateways = deployment.cluster.start_http("gateway", "GATEWAY_PORT")
    deployment.cluster.start("runner")
    task_id = deployment.create_task()
    gateway = deployment.gateways[0]

    first = httpx.post(f"{gateway}/run-agents", json={"id": task_id}).json()
    deployment.wait_for_event(task_id, "lock.released", first["run_id"])
    second = httpx.post(f"{gateway}/run-agents", json={"id": task_id})

    assert second.status_code == 202, second.text
    assert second.json()["fence"] > first["fence"]
    done = deployment.wait_for_event(task_id, "run.completed", second.json()["run_id"])
    assert done["fence"] == second.json()["fence"]


def test_a_runner_frozen_past_its_lease_is_superseded_and_its_writes_refused(
    sqlite_deployment: Deployment,
) -> None:
    deployment = sqlite_deployment
    cluster = deployment.cluster
    zombie, task_id, old = deployment.run_held_on_one_runner(min_idle_ms=120_000, hold_seconds=3)
    gateway = deployment.gateways[0]
    os.kill(zombie.pid, signal.SIGSTOP)
    eventually_sync(
        lambda: not deployment.redis.exists(deployment.keys.task_lock(task_id)),
        interval=0.05,
        message="the frozen runner's lock never expired",
    )

    cluster.start("runner")
    new = httpx.post(f"{gateway}/run-agents", json={"id": task_id})
    assert new.status_code == 202, new.text
    new_run = new.json()["run_id"]
    assert new.json()["fence"] > old["fence"]
    deployment.wait_for_event(task_id, "run.completed", new_run)

    os.kill(zombie.pid, signal.SIGCONT)
    superseded = deployment.wait_for_event(task_id, "run.superseded", old["run_id"])
    assert "lock" in superseded["reason"]

    events = deployment.events(task_id)
    old_writes = [e["type"] for e in events if e["run_id"] == old["run_id"]]
    assert "run.completed" not in old_writes
    assert "llm.delta" not in old_writes
    completed = [e for e in events if e["type"] == "run.completed"]
    assert [c["run_id"] for c in completed] == [new_run]
    task = eventually_sync(
        lambda: httpx.get(f"{gateway}/api/tasks/{task_id}").json(),
        until=lambda body: body["status"] == "done",
        interval=0.05,
        message="the task never reached done",
    )
    assert task["last_run_id"] == new_run
    assert "blue" in task["last_answer"]


def test_a_runner_killed_mid_run_is_replaced_under_a_fresh_lock_and_fence(
    sqlite_deployment: Deployment,
) -> None:
    deployment = sqlite_deployment
    doomed, task_id, run = deployment.run_held_on_one_runner(min_idle_ms=1500, hold_seconds=2)
    doomed.kill()
    doomed.wait()
    deployment.cluster.start("runner")

    completed = deployment.wait_for_event(task_id, "run.completed", run["run_id"], timeout=60)
    assert completed["fence"] > run["fence"]
    events = [e for e in deployment.events(task_id) if e["run_id"] == run["run_id"]]
    types = [e["type"] for e in events]
    assert types.count("run.completed") == 1
    # (the doomed runner may itself have re-acquired a lease that lapsed while it started up)
    start_fences = [e["fence"] for e in events if e["type"] == "run.started"]
    assert len(start_fences) == 2
    assert run["fence"] <= start_fences[0] < start_fences[1] == completed["fence"]
    # the second start came only after the first lease was declared expired and re-acquired
    expired_at = types.index("lock.expired")
    assert types.index("lock.acquired", expired_at) < types.index("run.started", expired_at)
