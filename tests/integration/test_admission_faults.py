"""A run admission that fails after it claimed the task (a failed XADD, a lost lock, the request
cancelled) is undone at once: the claim is no longer live, the lock is released, and the next
run of the task is admitted without waiting for RAGPOC_QUEUE_TIMEOUT_S. Real Redis/Valkey and
SQLite/PostgreSQL, faults injected for real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.commandside.claims import claim_task
from libs.commandside.schema import run_claims
from libs.events import Keys, LockNotHeld, RunAgent, RunRequested
from services.gateway.admission import Admitted, admit_run, queue_run
from services.gateway.runs_api import RunRequest, admit_and_queue
from tests.eventually import eventually
from tests.integration.admission_support import GatewayStack, gateway_stack


@pytest.fixture
async def stack(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> AsyncIterator[GatewayStack]:
    async with gateway_stack(redis_url, database_url, keys, tmp_path) as running:
        yield running


async def assert_free_at_once(stack: GatewayStack, task_id: int, undone_run: str) -> None:
    """The undone run's claim is not live, its lock is gone, and a new run is admitted."""
    claim = await stack.claim(task_id)
    assert claim is not None
    assert (claim.run_id, claim.state) == (undone_run, "failed")
    assert await stack.lock_holder(task_id) is None
    again = await stack.client.post("/run-agents", json={"id": task_id})
    assert again.status_code == 202, again.text
    assert again.json()["fence"] == claim.fence + 1


async def test_a_failed_command_xadd_frees_the_task_at_once(stack: GatewayStack) -> None:
    task_id = await stack.new_task()
    # the command stream's key holds a string: the XADD fails with WRONGTYPE
    await stack.redis.set(stack.keys.run_commands_of(task_id), "not a stream")

    failed = await stack.client.post("/run-agents", json={"id": task_id})

    assert failed.status_code == 503, failed.text
    assert "WRONGTYPE" in failed.json()["error"]["message"]
    claim = await stack.claim(task_id)
    assert claim is not None
    types = await stack.event_types(task_id)
    assert types[-4:] == ["lock.acquired", "run.requested", "run.failed", "lock.released"]
    # a runner that still got the command (a lost reply) would skip it: the run has ended
    assert await stack.store.run_outcome(task_id, claim.run_id) == "run.failed"
    await stack.redis.delete(stack.keys.run_commands_of(task_id))
    await assert_free_at_once(stack, task_id, claim.run_id)

    async def failed_run_error() -> str:
        runs = (await stack.client.get(f"/api/tasks/{task_id}")).json()["run_history"]
        return next((r["error"] for r in runs if r["run_id"] == claim.run_id), "")

    error = await eventually(failed_run_error)
    assert "could not be queued" in error


async def test_a_lock_lost_before_the_run_was_queued_frees_the_task(stack: GatewayStack) -> None:
    task_id = await stack.new_task()
    ctx = stack.context()
    admitted = await admit_run(ctx, task_id, "lost-run")
    assert isinstance(admitted, Admitted)
    fence = admitted.lease.fence
    await stack.redis.delete(stack.keys.task_lock(task_id))  # the lease lapsed

    with pytest.raises(LockNotHeld):
        await queue_run(
            ctx,
            admitted,
            RunRequested(task_id=task_id, run_id="lost-run", fence=fence, query="q"),
            RunAgent(task_id=task_id, run_id="lost-run", fence=fence, question="q"),
        )

    assert await stack.event_types(task_id) == ["task.created", "lock.acquired"]
    await assert_free_at_once(stack, task_id, "lost-run")


async def hold_claim_row(engine: AsyncEngine, task_id: int) -> AsyncConnection:
    """A transaction that keeps the task's claim row from being written until rolled back."""
    conn = await engine.connect()
    if conn.dialect.name == "sqlite":
        await conn.exec_driver_sql("BEGIN IMMEDIATE")  # the database's write lock
    else:
        row = sa.select(run_claims.c.task_id).where(run_claims.c.task_id == task_id)
        await conn.execute(row.with_for_update())
    return conn


async def test_a_request_cancelled_after_its_claim_frees_the_task(stack: GatewayStack) -> None:
    task_id = await stack.new_task()
    # an abandoned claim of an older run: the next claim is an UPDATE of this row
    assert await claim_task(stack.engine, task_id, "abandoned", 1, time.time() - 1)
    held = await hold_claim_row(stack.engine, task_id)
    request = asyncio.create_task(
        admit_and_queue(stack.context(), RunRequest(id=task_id), "cancelled-run")
    )
    paused = False
    try:
        # the request holds the lock and waits on the row; pause every Redis write, let the
        # claim through: it commits, and the request stops at its next write (lock.acquired)
        await eventually(lambda: stack.lock_holder(task_id), message="the lock was never taken")
        await stack.redis.client_pause(5_000, all=False)
        paused = True
        await held.rollback()

        async def claimed_by() -> str:
            claim = await stack.claim(task_id)
            return claim.run_id if claim else ""

        await eventually(claimed_by, until=lambda run: run == "cancelled-run")
        request.cancel()  # what a stopping gateway does to a request still in progress
        await stack.redis.client_unpause()
        paused = False
        with pytest.raises(asyncio.CancelledError):
            await request  # it ends once its undo has run
    finally:
        if paused:
            await stack.redis.client_unpause()
        await held.close()
        if not request.done():
            request.cancel()

    async def undone() -> bool:
        claim = await stack.claim(task_id)
        locked = await stack.lock_holder(task_id)
        return claim is not None and claim.state == "failed" and locked is None

    await eventually(undone, message="the cancelled admission was not undone")
    await assert_free_at_once(stack, task_id, "cancelled-run")
