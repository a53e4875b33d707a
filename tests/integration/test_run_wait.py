"""`POST /run-agents?wait=`: many waiters at once are served by the gateway's one shared event
reader (no Redis connection each), and each gets its own run's outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.integration.conftest import StartStack
from tests.integration.inprocess import InProcessStack

WAITERS = 24


@pytest.fixture
async def stack(gateway_stack: StartStack) -> AsyncIterator[InProcessStack]:
    """How waiters read does not depend on the Redis server. Every run stays busy a second:
    the waiters are all waiting at the same time."""
    async with gateway_stack(test_hold_seconds=1.0) as running:
        yield running


async def event_reader_connections(redis_url: str, namespace: str) -> int:
    """The gateway's connections for following the event logs (blocking reads): the hub's
    one, and before waiters shared it, one more per waiter."""
    async with aioredis.Redis.from_url(redis_url, decode_responses=True) as admin:
        clients = await admin.client_list()
    return sum(1 for c in clients if c.get("name") == f"{namespace}:gateway-sse")


async def test_waiters_share_the_gateways_reader_and_each_gets_its_own_outcome(
    stack: InProcessStack,
) -> None:
    redis_url = stack.settings.redis_url
    task_ids = [await stack.new_task(f"task {n}") for n in range(WAITERS)]
    before = await event_reader_connections(redis_url, stack.settings.namespace)
    waiting = [
        asyncio.create_task(stack.client.post("/run-agents?wait=60", json={"id": task_id}))
        for task_id in task_ids
    ]
    await asyncio.sleep(0.5)  # all admitted, none ended (each is held 1 s)
    during = await event_reader_connections(redis_url, stack.settings.namespace)
    answers = await asyncio.gather(*waiting)

    assert [a.status_code for a in answers] == [200] * WAITERS, [a.text for a in answers]
    assert [a.json()["task_id"] for a in answers] == task_ids
    assert {a.json()["status"] for a in answers} == {"done"}
    assert len({a.json()["run_id"] for a in answers}) == WAITERS
    # the hub's one reader, whatever the number of waiters (one each would add WAITERS)
    assert during == before == 1, (before, during)
