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
import time
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
ACCEPT_WITHIN_S = 90.0  # above the lock's 30 s TTL: a lock left by a cut-short attempt lapses
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
        # a run whose handler lost its connection is handed out again once idle this long (60 s
        # by default); the lease stays well above a failover's 2-3 s, so it never lapses in one
        RAGPOC_LOCK_TTL_MS="10000",
        RAGPOC_CONSUMER_MIN_IDLE_MS="15000",
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
    """POST /run-agents for each task, a new one every 50 ms, each asked again until accepted
    (202): a 503 (the command's shard failing over, or without a replica yet) is no answer,
    nor a 409 from an attempt cut short by the failover whose lock could not be released (it
    lapses within the lock's TTL). A third of the way through, waits until the master is dead.
    Returns the accepted run ids."""

    async def until_accepted(client: httpx.AsyncClient, task_id: int) -> str:
        deadline = time.monotonic() + ACCEPT_WITHIN_S
        while True:
            reply = await client.post("/run-agents", json={"id": task_id})
            if reply.status_code == 202:
                return str(reply.json()["run_id"])
            assert reply.status_code in (409, 503), reply.text  # not accepted: ask again
            assert time.monotonic() < deadline, f"task {task_id} was never accepted: {reply.text}"
            await asyncio.sleep(0.2)

    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        asking = []
        for n, task_id in enumerate(task_ids):
            if n == len(task_ids) // 3:
                await asyncio.to_thread(killed.wait, 30)
            asking.append(asyncio.create_task(until_accepted(client, task_id)))
            await asyncio.sleep(0.05)
        return list(await asyncio.gather(*asking))


@pytest.mark.timeout(300)
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
    result: list[list[str] | BaseException] = []

    def submit() -> None:
        try:
            result.append(asyncio.run(submit_runs(deployment.gateway, task_ids, killed)))
        except BaseException as exc:  # reported by the test, not lost in the thread
            result.append(exc)

    submitting = threading.Thread(target=submit)
    submitting.start()
    eventually_sync(lambda: deployment.runs(task_ids[TASKS // 3 - 1]), within=30, interval=0.05)

    deployment.valkey.kill(victim)
    killed.set()
    deployment.valkey.wait_failover(victim, timeout_s=20)
    deployment.valkey.restart(victim)  # back as a replica: its shard can confirm 202s again
    submitting.join(timeout=ACCEPT_WITHIN_S + 30)
    assert not submitting.is_alive(), "the runs were not all accepted in time"
    [outcome] = result
    if isinstance(outcome, BaseException):
        raise outcome
    accepted = outcome
    assert len(accepted) == TASKS

    def unended() -> dict[str, Counter[str]]:
        """The accepted runs without a terminal event, with what their tasks' streams hold."""
        runs = {r: t for task_id in task_ids for r, t in deployment.runs(task_id).items()}
        return {r: runs.get(r, Counter()) for r in accepted if not TERMINAL & set(runs.get(r, ()))}

    eventually_sync(
        unended,
        until=lambda left: not left,
        within=90,
        interval=0.5,
        message=lambda: (
            f"accepted runs never ended: {unended()}\n{deployment.processes.log_tail()}"
        ),
    )
    for task_id in task_ids:
        for run_id, types in deployment.runs(task_id).items():
            facts = (task_id, run_id, types)
            if not types["run.requested"]:
                # refused (409), or cut short before its request was written: it never ran
                assert not types["run.started"], facts
                assert not TERMINAL & set(types), facts
                continue
            assert types["run.requested"] == 1, facts
            assert types["run.started"] <= 1, facts
            # an attempt answered 503 may end later (or has ended already); never twice
            ends = sum(types[t] for t in TERMINAL)
            assert ends == 1 if run_id in accepted else ends <= 1, facts
    # every process rode the failover out: none exited
    exited = [
        (name, process.returncode)
        for name, process in deployment.processes.processes
        if process.poll() is not None
    ]
    assert exited == [], f"{exited}\n{deployment.processes.log_tail()}"
