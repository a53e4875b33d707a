"""Task ids are never handed out twice, even after Valkey loses its last writes: they come from
a counter in SQL, on real Redis/Valkey and SQLite/PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from libs.commandside.schema import id_counters
from libs.events import Keys
from libs.readmodels.schema import tasks
from tests.eventually import eventually
from tests.integration.admission_support import GatewayStack, gateway_stack


@pytest.fixture
async def stack(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> AsyncIterator[GatewayStack]:
    async with gateway_stack(redis_url, database_url, keys, tmp_path) as running:
        yield running


async def task_rows(stack: GatewayStack) -> dict[int, str]:
    async with stack.engine.connect() as conn:
        rows = (await conn.execute(sa.select(tasks.c.id, tasks.c.title))).all()
    return {int(row.id): str(row.title) for row in rows}


async def test_ids_keep_growing_after_valkey_lost_its_counter(stack: GatewayStack) -> None:
    first = [await stack.new_task(f"before the loss {n}") for n in range(3)]
    # Valkey restarted from an AOF that missed its last second: the old counter key is gone
    # (what INCR handed out ids from), or back at an older value.
    await stack.redis.delete(stack.keys.task_sequence)
    after = await stack.new_task("after the loss")
    await stack.redis.set(stack.keys.task_sequence, 1)
    later = await stack.new_task("after another loss")

    assert after > max(first)
    assert later > after
    rows = await eventually(lambda: task_rows(stack), until=lambda found: len(found) == 5)
    assert rows[after] == "after the loss"  # its own row, not merged into an earlier task
    assert rows[later] == "after another loss"
    assert sorted(rows.values()) == sorted(
        [*(f"before the loss {n}" for n in range(3)), "after the loss", "after another loss"]
    )
    for task_id in (*first, after, later):
        assert (await stack.event_types(task_id)).count("task.created") == 1


async def test_concurrent_creates_get_distinct_ids(stack: GatewayStack) -> None:
    replies = await asyncio.gather(
        *(stack.client.post("/api/tasks", json={"title": f"t{n}"}) for n in range(20))
    )
    assert {r.status_code for r in replies} == {201}
    assert len({r.json()["id"] for r in replies}) == 20


async def test_a_deployment_that_used_the_redis_counter_continues_above_it(
    stack: GatewayStack,
) -> None:
    # ids 1..41 were handed out by INCR before the counter moved to SQL
    await stack.redis.set(stack.keys.task_sequence, 41)
    assert await stack.new_task() == 42
    assert await stack.new_task() == 43
    async with stack.engine.connect() as conn:
        stored = (await conn.execute(sa.select(id_counters.c.last_id))).scalar()
    assert stored == 43
