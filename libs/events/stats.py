"""Cluster-wide run outcome counters kept in one Redis hash, written by runners and read by
gateways for /metrics (each runner's own process counters would be invisible to the gateway)."""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis

from libs.events.names import Keys
from libs.events.redis_typing import awaitable

__all__ = ["DURATION_BUCKETS", "RunStats"]

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class RunStats:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.key = keys.run_stats

    async def record(self, outcome: str, duration_s: float) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(self.key, outcome, 1)
            pipe.hincrby(self.key, "count", 1)
            pipe.hincrbyfloat(self.key, "sum", duration_s)
            for bound in DURATION_BUCKETS:
                if duration_s <= bound:
                    pipe.hincrby(self.key, f"le:{bound}", 1)
            await pipe.execute()

    async def snapshot(self) -> dict[str, float]:
        raw = cast(dict[str, str], await awaitable(self.redis.hgetall(self.key)))
        return {field: float(value) for field, value in raw.items()}
