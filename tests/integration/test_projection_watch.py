"""A gateway learns the projector's progress from the projector (a hash and a pub/sub message),
not by polling SQL: a waiter wakes on the message; what was published before the gateway
subscribed is read from the hash; a lost message costs one SQL look, never a wrong answer; and
the projector announces what it commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.events import Appended, EventStore, Keys, TaskCreated, connect_redis
from libs.readmodels.schema import projector_positions
from services.gateway.projection_watch import ProjectionWatch, parse_positions
from services.projector.main import Projector
from tests.eventually import eventually


def test_positions_parse_from_the_announcement() -> None:
    assert parse_positions("3=1700-0 12=1701-5") == {3: "1700-0", 12: "1701-5"}
    assert parse_positions("x=1 4= 5=9-9 garbage") == {5: "9-9"}


@pytest.fixture
async def watch(
    redis_client: aioredis.Redis, engine: AsyncEngine, keys: Keys
) -> AsyncIterator[ProjectionWatch]:
    watching = ProjectionWatch(redis_client, engine, keys)
    watching.start()
    # subscribed once a publish reaches it
    await eventually(lambda: redis_client.pubsub_numsub(keys.projected), until=lambda r: r[0][1])
    yield watching
    await watching.stop()


async def test_a_waiter_wakes_on_the_projectors_message(
    watch: ProjectionWatch, redis_client: aioredis.Redis, keys: Keys
) -> None:
    written = Appended(stream_id="5-0", log_id="5-0", partition=1)
    waiting = asyncio.create_task(watch.wait(written, bound_s=10))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await redis_client.publish(keys.projected, "1=4-0")  # not there yet
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await redis_client.publish(keys.projected, "0=9-0 1=6-0")
    assert await asyncio.wait_for(waiting, 2) is True  # SQL knows nothing: only pub/sub told it


async def test_what_was_announced_before_the_gateway_subscribed_is_read_from_the_hash(
    redis_client: aioredis.Redis, engine: AsyncEngine, keys: Keys
) -> None:
    await redis_client.hset(keys.projected, mapping={"2": "7-0"})
    watching = ProjectionWatch(redis_client, engine, keys)
    watching.start()
    try:
        written = Appended(stream_id="7-0", log_id="7-0", partition=2)
        assert await asyncio.wait_for(watching.wait(written, bound_s=5), 2) is True
    finally:
        await watching.stop()


async def test_a_lost_message_costs_one_sql_look_and_the_bound_still_holds(
    watch: ProjectionWatch, engine: AsyncEngine
) -> None:
    written = Appended(stream_id="8-0", log_id="8-0", partition=3)
    assert await watch.wait(written, bound_s=0.3) is False  # nobody has projected it
    async with engine.begin() as conn:  # projected, but its announcement was lost
        await conn.execute(projector_positions.insert().values(partition=3, last_id="8-0"))
    assert await watch.wait(written, bound_s=5) is True


async def test_the_projector_announces_what_it_commits(
    redis_client: aioredis.Redis, engine: AsyncEngine, keys: Keys
) -> None:
    appended = await EventStore(redis_client, keys).append(TaskCreated(task_id=1, title="t"))
    projector = Projector(redis_client, engine, keys)
    await projector.start()
    assert await projector.catch_up() == 1
    stored = await redis_client.hgetall(keys.projected)  # type: ignore[misc]
    assert stored == {str(appended.partition): appended.log_id}


async def test_a_quiet_channel_is_not_an_error(
    redis_url: str, engine: AsyncEngine, keys: Keys
) -> None:
    quick = connect_redis(redis_url, socket_timeout=0.5)  # shorter than the quiet spell
    watching = ProjectionWatch(quick, engine, keys)
    watching.start()
    try:
        await asyncio.sleep(1.5)
        assert watching._streak.failures == 0, watching._streak.last_error
        written = Appended(stream_id="3-0", log_id="3-0", partition=0)
        waiting = asyncio.create_task(watching.wait(written, bound_s=5))
        await asyncio.sleep(0.05)
        await quick.publish(keys.projected, "0=3-0")
        assert await asyncio.wait_for(waiting, 2) is True
    finally:
        await watching.stop()
        await quick.aclose()
