"""A run's lease keeper against a real Redis/Valkey that stalls (a TCP proxy holding back what
the runner sends): a stall shorter than the lease is ridden out and the answer kept; a longer
one loses the lease, and the run stops writing without crashing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from libs.commandside.claims import get_claim
from libs.events import Keys, connect_redis
from services.runner.lifecycle import handle_run
from tests.eventually import eventually
from tests.integration.runnerkit import RunnerKit, runner_kit
from tests.integration.stallproxy import StallProxy

TTL_MS = 1500  # extended every 0.5 s
TASK = 3


@pytest.fixture
async def kit(
    redis_url: str,
    redis_client: aioredis.Redis,
    keys: Keys,
    tmp_path: Path,
) -> AsyncIterator[RunnerKit]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with runner_kit(redis_url, database_url, keys, tmp_path, lock_ttl_ms=TTL_MS) as kit:
        yield kit


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[StallProxy]:
    async with StallProxy(redis_url) as proxy:
        yield proxy


@pytest.fixture
async def stalling_redis(proxy: StallProxy) -> AsyncIterator[aioredis.Redis]:
    """The runner's lease client, through the proxy: a command held back times out at 0.2 s."""
    client = connect_redis(proxy.url, socket_timeout=0.2)
    yield client
    await client.aclose()


async def test_a_redis_stall_shorter_than_the_lease_does_not_lose_the_run(
    kit: RunnerKit, proxy: StallProxy, stalling_redis: aioredis.Redis
) -> None:
    command = await kit.admit(TASK, hold_seconds=1.6)
    run = asyncio.create_task(handle_run(command, kit.deps("runner", locks_redis=stalling_redis)))
    await kit.wait_for(TASK, "run.started")

    proxy.stall()
    await eventually(
        lambda: proxy.held_requests,
        until=lambda held: held >= 2,  # an extension timed out, and its retry is held too
        within=TTL_MS / 1000,
        interval=0.01,
        message="the keeper never tried to extend during the stall",
    )
    proxy.flow()
    await run  # the keeper retried through the stall: no crash, no lost lease

    types = await kit.types(TASK)
    assert "lock.lost" not in types
    assert types.count("run.completed") == 1
    assert types[-1] == "lock.released"
    claim = await get_claim(kit.engine, TASK)
    assert claim is not None
    assert claim.state == "done"


async def test_a_stall_longer_than_the_lease_stops_the_run_without_a_crash(
    kit: RunnerKit,
    proxy: StallProxy,
    stalling_redis: aioredis.Redis,
    redis_client: aioredis.Redis,
    keys: Keys,
) -> None:
    command = await kit.admit(TASK, hold_seconds=5.0)
    run = asyncio.create_task(handle_run(command, kit.deps("runner", locks_redis=stalling_redis)))
    await kit.wait_for(TASK, "run.started")

    proxy.stall()
    await eventually(
        lambda: redis_client.exists(keys.task_lock(TASK)),
        until=lambda exists: exists == 0,
        within=TTL_MS / 1000 * 3,
        message="the lease never lapsed while its keeper could not reach Redis",
    )
    proxy.flow()
    await run  # LeaseLost: the work is cancelled and the run reported, not raised

    types = await kit.types(TASK)
    assert "run.completed" not in types
    assert "retrieval.done" not in types  # the work stopped at once
    assert types[-2:] == ["lock.lost", "run.superseded"]
    claim = await get_claim(kit.engine, TASK)
    assert claim is not None
    assert claim.state == "failed"  # the task is free for the next run
    assert not await redis_client.exists(keys.task_lock(TASK))
