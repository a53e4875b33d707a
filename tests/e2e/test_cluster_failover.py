"""A master of the Valkey Cluster dies while runs are being accepted and executed: its replica
is promoted, every process follows it, no run executes twice and no accepted run is lost.

A 202 waits for the command to be on disk on the master and on its replica
(RAGPOC_DURABLE_REPLICAS=1), so the promoted replica has every accepted command. Replication
is asynchronous for everything else, so a run in flight may lose its last events with the old
master: it ends anyway, once (redelivered, or failed under a lost lock), never twice.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.cluster import RedisCluster

from libs.events import Keys
from services.cli.valkey_cluster import LocalCluster
from tests.e2e.processes import Cluster
from tests.eventually import eventually_sync

pytestmark = pytest.mark.e2e

TASKS = 48
TERMINAL = {"run.completed", "run.failed", "run.cancelled"}


class Deployment:
    def __init__(self, processes: Cluster, valkey: LocalCluster, keys: Keys) -> None:
        self.processes = processes
        self.valkey = valkey
        self.keys = keys
        self.gateway = ""

    def runs(self, task_id: int) -> dict[str, Counter[str]]:
        """run id -> how many events of each type the task's stream holds for it. A client per
        call: one kept across the failover would keep a socket to the dead node."""
        found: dict[str, Counter[str]] = {}
        with RedisCluster.from_url(self.valkey.url, decode_responses=True) as client:
            entries = client.xrange(self.keys.task_events(task_id))
        for _id, fields in entries:
            event = json.loads(fields["data"])
            if run_id := event.get("run_id"):
                found.setdefault(run_id, Counter())[event["type"]] += 1
        return found


@pytest.fixture
def deployment(fresh_valkey_cluster: LocalCluster, tmp_path: Path) -> Iterator[Deployment]:
    namespace = f"fo{uuid.uuid4().hex[:8]}"
    processes = Cluster.create(
        tmp_path / "logs",
        REDIS_URL=fresh_valkey_cluster.url,
        RAGPOC_REDIS_CLUSTER="1",
        RAGPOC_DURABLE_REPLICAS="1",
        DATABASE_URL=f"sqlite:///{tmp_path / 'readmodels.db'}",
        RAGPOC_NAMESPACE=namespace,
        RAGPOC_DATA_DIR=str(tmp_path / "data"),
        MOCKAI_TTFT_MS="150",  # runs last long enough to be in flight when the master dies
    )
    [mockai] = processes.start_http("mockai", "MOCKAI_PORT")
    processes.env["OPENAI_BASE_URL"] = f"{mockai}/v1"
    [processes.env["INGESTOR_URL"]] = processes.start_http("ingestor", "INGESTOR_PORT")
    processes.start("projector")
    running = Deployment(processes, fresh_valkey_cluster, Keys(namespace, 16))
    [running.gateway] = processes.start_http("gateway", "GATEWAY_PORT")
    processes.start("runner")
    processes.start("runner")
    try:
        yield running
    finally:
        processes.stop()


async def submit_runs(gateway: str, task_ids: list[int], killed: threading.Event) -> list[str]:
    """POST /run-agents for each task in turn, a new one every 50 ms; a 503 (the command's
    shard is failing over, or has no replica yet) is asked again until accepted. Returns the
    accepted run ids. Half-way through, waits until the master is dead."""
    accepted: list[str] = []
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        for n, task_id in enumerate(task_ids):
            if n == len(task_ids) // 3:
                await asyncio.to_thread(killed.wait, 30)
            for _attempt in range(200):
                reply = await client.post("/run-agents", json={"id": task_id})
                if reply.status_code == 202:
                    accepted.append(reply.json()["run_id"])
                    break
                assert reply.status_code == 503, reply.text  # refused, not accepted: again
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"task {task_id} was never accepted")
            await asyncio.sleep(0.05)
    return accepted


def test_a_master_killed_under_load_loses_no_accepted_run_and_runs_none_twice(
    deployment: Deployment,
) -> None:
    with httpx.Client(base_url=deployment.gateway, timeout=10) as api:
        task_ids = [
            int(api.post("/api/tasks", json={"title": f"task {n}"}).json()["id"])
            for n in range(TASKS)
        ]
    # the master holding the most of these tasks' partitions
    masters = Counter(
        deployment.valkey.master_of_key(deployment.keys.run_commands_of(t)) for t in task_ids
    )
    victim = masters.most_common(1)[0][0]
    killed = threading.Event()
    result: list[list[str]] = []
    submitting = threading.Thread(
        target=lambda: result.append(asyncio.run(submit_runs(deployment.gateway, task_ids, killed)))
    )
    submitting.start()
    eventually_sync(lambda: deployment.runs(task_ids[TASKS // 3 - 1]), within=30, interval=0.05)

    deployment.valkey.kill(victim)
    killed.set()
    deployment.valkey.wait_failover(victim, timeout_s=20)
    deployment.valkey.restart(victim)  # back as a replica: its shard can confirm 202s again
    submitting.join(timeout=120)
    assert not submitting.is_alive(), "the runs were not all accepted in 120 s"
    [accepted] = result
    assert len(accepted) == TASKS

    def every_run_ended() -> bool:
        ended = {
            run_id
            for task_id in task_ids
            for run_id, types in deployment.runs(task_id).items()
            if TERMINAL & set(types)
        }
        return set(accepted) <= ended

    eventually_sync(
        every_run_ended,
        within=90,
        interval=0.5,
        message=lambda: f"accepted runs never ended:\n{deployment.processes.log_tail()}",
    )
    for task_id in task_ids:
        for run_id, types in deployment.runs(task_id).items():
            assert sum(types[t] for t in TERMINAL) == 1, (task_id, run_id, types)
            assert types["run.started"] <= 1, (task_id, run_id, types)
            assert types["run.requested"] == 1, (task_id, run_id, types)
    # every process rode the failover out: none exited
    exited = [
        (name, process.returncode)
        for name, process in deployment.processes.processes
        if process.poll() is not None
    ]
    assert exited == [], f"{exited}\n{deployment.processes.log_tail()}"
