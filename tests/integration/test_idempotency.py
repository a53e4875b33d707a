"""`Idempotency-Key` on POST /run-agents: a retry gets the run its first request started, never
a second run; in process against real Redis/Valkey and SQLite/PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.events import Keys
from tests.integration.inprocess import InProcessStack, in_process_stack


@pytest.fixture
async def stack(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> AsyncIterator[InProcessStack]:
    async with in_process_stack(redis_url, database_url, keys, str(tmp_path), dev=True) as running:
        yield running


async def runs_requested(stack: InProcessStack, task_id: int) -> list[str]:
    return [
        e.event.run_id
        for e in await stack.store.task_events(task_id)
        if type(e.event).__struct_config__.tag == "run.requested"
    ]


async def test_a_retry_after_the_run_finished_gets_that_run_not_a_new_one(
    stack: InProcessStack,
) -> None:
    task_id = await stack.new_task()
    headers = {"Idempotency-Key": "retry-me-1"}
    first = await stack.client.post(
        "/run-agents", params={"wait": 20}, json={"id": task_id}, headers=headers
    )
    assert first.status_code == 200, first.text
    await stack.wait_for_event(task_id, "lock.released")

    retry = await stack.client.post("/run-agents", json={"id": task_id}, headers=headers)
    assert retry.status_code == 202, retry.text
    assert retry.json()["run_id"] == first.json()["run_id"]
    assert retry.json()["status"] == "done"
    assert retry.json()["replayed"] is True

    waited = await stack.client.post(
        "/run-agents", params={"wait": 5}, json={"id": task_id}, headers=headers
    )
    assert waited.status_code == 200, waited.text
    for field in ("run_id", "fence", "status", "answer", "sources"):
        assert waited.json()[field] == first.json()[field]
    assert await runs_requested(stack, task_id) == [first.json()["run_id"]]

    fresh = await stack.client.post(
        "/run-agents", json={"id": task_id}, headers={"Idempotency-Key": "a-new-request"}
    )
    assert fresh.status_code == 202, fresh.text
    assert fresh.json()["run_id"] != first.json()["run_id"]
    assert fresh.json()["fence"] > first.json()["fence"]


async def test_a_retry_while_the_run_is_going_waits_for_that_run(stack: InProcessStack) -> None:
    task_id = await stack.new_task()
    headers = {"Idempotency-Key": "slow-one"}
    body = {"id": task_id, "hold_seconds": 1.0}
    first = await stack.client.post("/run-agents", json=body, headers=headers)
    assert first.status_code == 202, first.text

    retry = await stack.client.post("/run-agents", params={"wait": 20}, json=body, headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.json()["run_id"] == first.json()["run_id"]
    assert retry.json()["status"] == "done"
    assert "blue" in retry.json()["answer"]
    assert await runs_requested(stack, task_id) == [first.json()["run_id"]]


async def test_concurrent_requests_with_one_key_start_one_run(stack: InProcessStack) -> None:
    task_id = await stack.new_task()
    headers = {"Idempotency-Key": "burst"}
    replies = await asyncio.gather(
        *(
            stack.client.post(
                "/run-agents", json={"id": task_id, "hold_seconds": 0.5}, headers=headers
            )
            for _ in range(20)
        )
    )
    statuses = sorted(r.status_code for r in replies)
    assert set(statuses) <= {202, 409}, [r.text for r in replies]
    accepted = {r.json()["run_id"] for r in replies if r.status_code == 202}
    assert len(accepted) == 1
    assert [r for r in replies if r.status_code == 202 and not r.json().get("replayed")]
    assert await runs_requested(stack, task_id) == list(accepted)


async def test_the_same_key_with_a_different_body_is_refused_and_writes_nothing(
    stack: InProcessStack,
) -> None:
    task_id = await stack.new_task()
    headers = {"Idempotency-Key": "one-meaning"}
    first = await stack.client.post(
        "/run-agents", params={"wait": 20}, json={"id": task_id, "query": "sky?"}, headers=headers
    )
    assert first.status_code == 200, first.text
    await stack.wait_for_event(task_id, "lock.released")
    before = await stack.store.task_events(task_id)

    other = await stack.client.post(
        "/run-agents", json={"id": task_id, "query": "grass?"}, headers=headers
    )
    assert other.status_code == 422
    assert "different request" in other.json()["error"]["message"]
    assert await stack.store.task_events(task_id) == before


async def test_a_refused_request_does_not_use_up_its_key(stack: InProcessStack) -> None:
    task_id = await stack.new_task()
    holder = await stack.client.post("/run-agents", json={"id": task_id, "hold_seconds": 0.5})
    assert holder.status_code == 202
    headers = {"Idempotency-Key": "try-again-later"}
    refused = await stack.client.post("/run-agents", json={"id": task_id}, headers=headers)
    assert refused.status_code == 409
    assert refused.json()["error"]["holder_run_id"] == holder.json()["run_id"]

    await stack.wait_for_event(task_id, "lock.released")
    later = await stack.client.post("/run-agents", json={"id": task_id}, headers=headers)
    assert later.status_code == 202, later.text
    assert "replayed" not in later.json()
    assert await runs_requested(stack, task_id) == [holder.json()["run_id"], later.json()["run_id"]]


async def test_a_key_belongs_to_one_task(stack: InProcessStack) -> None:
    first, second = await stack.new_task("first"), await stack.new_task("second")
    headers = {"Idempotency-Key": "shared-by-accident"}
    a = await stack.client.post("/run-agents", json={"id": first}, headers=headers)
    b = await stack.client.post("/run-agents", json={"id": second}, headers=headers)
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.json()["run_id"] != b.json()["run_id"]


MALFORMED_KEYS = [b"", b"x" * 256, b"has space", "caf\u00e9".encode("latin-1")]


async def test_a_malformed_key_gets_a_422(stack: InProcessStack) -> None:
    task_id = await stack.new_task()
    for key in MALFORMED_KEYS:
        reply = await stack.client.post(
            "/run-agents", json={"id": task_id}, headers={"Idempotency-Key": key}
        )
        assert reply.status_code == 422, key
        assert "Idempotency-Key" in reply.json()["error"]["message"]
    assert await runs_requested(stack, task_id) == []
