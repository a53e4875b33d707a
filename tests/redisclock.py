"""Waiting for the Redis clock, for tests whose entries must fall in different milliseconds."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.eventually import eventually

__all__ = ["until_redis_clock_passes"]


async def redis_ms(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def until_redis_clock_passes(redis: aioredis.Redis) -> None:
    """Until the Redis clock is past the millisecond of every entry written so far. Entry ids
    are that clock's milliseconds: the next entry gets a later one than every entry before, in
    any stream (ids of different streams otherwise tie within a millisecond). A trim's age
    cutoff is `now - retention` by that clock and drops only entries older than it, so with a
    retention of 0 s an entry of this very millisecond is not old enough yet either."""
    written = await redis_ms(redis)  # every entry id so far is at or below this millisecond
    await eventually(
        lambda: redis_ms(redis),
        until=lambda ms: ms > written,
        interval=0.001,
        message="the Redis clock did not move on",
    )
