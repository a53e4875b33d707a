"""POST /run-agents and its three layers of duplicate protection, in process against real
Redis/Valkey and SQLite/PostgreSQL: what a refused client is told, what is recorded."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.commandside.claims import claim_task, get_claim
from libs.commandside.locks import TaskLocks
from libs.common.database import create_engine
from libs.events import Keys
from services.gateway.admission import Refused
from tests.integration.inprocess import InProcessStack, in_process_stack


@pytest.fixture
async def stack(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> AsyncIterator[InProcessStack]:
    async with in_process_stack(
        redis_url, database_url, keys, str(tmp_path), dev=True, test_hold_seconds=0.0
    ) as running:
        yield running


async def test_a_second_request_while_a_run_holds_the_task_gets_409_naming_the_holder(
    stack: InProcessStack,
) -> None:
    task_id = await stack.new_task()
    first = await stack.client.post("/run-agents", json={"id": task_id, "hold_seconds": 5})
    second = await stack.client.post("/run-agents", json={"id": task_id})

    assert first.status_code == 202
    assert second.status_code == 409
    error = second.json()["error"]
    assert error["holder_run_id"] == first.json()["run_id"]
    assert error["layer"] == "precheck"
    assert time.time() < error["expires_at"] <= time.time() + 30
    assert first.json()["run_id"] in error["message"]
    assert "expires at" in error["message"]


async def test_the_lock_history_lists_acquisition_and_conflicts_newest_first(
    stack: InProcessStack,
) -> None:
    task_id = await stack.new_task()
    accepted = await stack.client.post("/run-agents", json={"id": task_id, "hold_seconds": 5})
    for _ in range(2):
        await stack.client.post("/run-agents", json={"id": task_id})

    history = (await stack.client.get(f"/api/tasks/{task_id}/locks")).json()["locks"]

    assert [h["type"] for h in history] == ["lock.conflict", "lock.conflict", "lock.acquired"]
    assert history[-1]["run_id"] == accepted.json()["run_id"]
    assert history[-1]["fence"] == accepted.json()["fence"]
    assert {h["holder_run_id"] for h in history[:2]} == {accepted.json()["run_id"]}
    assert (await stack.client.get("/api/tasks/999/locks")).status_code == 404


async def test_a_finished_run_releases_the_lock_and_the_next_run_gets_a_larger_fence(
    stack: InProcessStack,
) -> None:
    task_id = await stack.new_task()
    first = (await stack.client.post("/run-agents", json={"id": task_id})).json()
    await stack.wait_for_event(task_id, "lock.released")
    second = await stack.client.post("/run-agents", json={"id": task_id})
    assert second.status_code == 202
    assert second.json()["fence"] == first["fence"] + 1
    history = (await stack.client.get(f"/api/tasks/{task_id}/locks")).json()["locks"]
    assert [h["type"] for h in history[-2:]] == ["lock.released", "lock.acquired"]


async def test_a_run_answered_with_wait_has_already_freed_its_task(stack: InProcessStack) -> None:
    task_id = await stack.new_task()
    fences = []
    for query in ["sky?", "sky [[mockai:fail-midstream]]", "sky again?"]:
        reply = await stack.client.post(
            "/run-agents", params={"wait": 20}, json={"id": task_id, "query": query}
        )
        assert reply.status_code == 200, reply.text  # no 409: the previous run let go in time
        fences.append(reply.json()["fence"])
    assert fences == [1, 2, 3]
    history = (await stack.client.get(f"/api/tasks/{task_id}/locks")).json()["locks"]
    assert [h["type"] for h in history] == ["lock.released", "lock.acquired"] * 3


async def test_a_live_claim_in_the_database_refuses_the_run_and_frees_the_lock(
    stack: InProcessStack, keys: Keys, redis_url: str
) -> None:
    task_id = await stack.new_task()
    engine = create_engine(stack.settings.sqlalchemy_url)
    try:
        # a run queued elsewhere whose lock lapsed (the queue was slow): only the DB guards it
        assert await claim_task(engine, task_id, "queued-run", 7, time.time() + 60)
        reply = await stack.client.post("/run-agents", json={"id": task_id})
        assert reply.status_code == 409
        assert reply.json()["error"]["layer"] == "db"
        assert reply.json()["error"]["holder_run_id"] == "queued-run"
        assert not await stack.store.redis.exists(keys.task_lock(task_id))
        claim = await get_claim(engine, task_id)
        assert claim is not None
        assert (claim.run_id, claim.state) == ("queued-run", "queued")
    finally:
        await engine.dispose()


async def test_an_expired_claim_no_longer_guards_the_task(stack: InProcessStack) -> None:
    task_id = await stack.new_task()
    engine = create_engine(stack.settings.sqlalchemy_url)
    try:
        assert await claim_task(engine, task_id, "abandoned-run", 7, time.time() - 1)
        reply = await stack.client.post("/run-agents", json={"id": task_id})
        assert reply.status_code == 202
    finally:
        await engine.dispose()


async def test_the_lock_layer_refuses_when_the_lock_was_taken_after_the_precheck(
    stack: InProcessStack, keys: Keys
) -> None:
    task_id = await stack.new_task()
    locks = TaskLocks(stack.store.redis, keys)
    taken = await locks.acquire(task_id, "racer", 30_000)
    assert not isinstance(taken, Refused)
    outcome = await stack.admit_directly(keys, task_id, "late-run")
    assert isinstance(outcome, Refused)
    assert (outcome.layer, outcome.holder_run_id) == ("lock", "racer")


async def test_metrics_count_requests_acceptances_refusals_by_layer_and_outcomes(
    stack: InProcessStack,
) -> None:
    task_id = await stack.new_task()
    await stack.client.post("/run-agents", json={"id": task_id, "hold_seconds": 0.5})
    refused = await stack.client.post("/run-agents", json={"id": task_id})
    assert refused.status_code == 409
    await stack.wait_for_event(task_id, "lock.released")
    metrics = (await stack.client.get("/metrics")).text
    assert 'ragpoc_runs_rejected_total{layer="precheck"}' in metrics
    assert "ragpoc_runs_accepted_total" in metrics
    assert "ragpoc_runs_completed_total 1.0" in metrics
    assert "ragpoc_run_duration_seconds_count 1.0" in metrics
