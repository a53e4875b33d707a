"""Cluster-wide run outcome counters kept in Redis hashes (one per partition), written by
runners and added up by gateways for /metrics (each runner's own process counters would be
invisible to the gateway)."""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis

from libs.events.names import Keys

__all__ = ["DURATION_BUCKETS", "RunStats"]

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


# One step, so a reader never sees a count without its sum or bucket (a cluster client has no
# MULTI; a script on one key runs anywhere). ARGV: outcome, duration, the buckets it falls in.
_RECORD = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('HINCRBYFLOAT', KEYS[1], 'sum', ARGV[2])
for i = 3, #ARGV do
  redis.call('HINCRBY', KEYS[1], ARGV[i], 1)
end
return 1
"""


class RunStats:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._record = redis.register_script(_RECORD)

    async def record(self, outcome: str, duration_s: float, *, task_id: int) -> None:
        """Count a run of `task_id` that ended with `outcome` after `duration_s`."""
        key = self.keys.run_stats(self.keys.partition_of(task_id))
        buckets = [f"le:{bound}" for bound in DURATION_BUCKETS if duration_s <= bound]
        await self._record(keys=[key], args=[outcome, repr(duration_s), *buckets])

    async def snapshot(self) -> dict[str, float]:
        """Every partition's counters (and the old single hash's, if any) added up."""
        hashes = [*map(self.keys.run_stats, range(self.keys.partitions))]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in [*hashes, self.keys.legacy_run_stats]:
                pipe.hgetall(key)
            replies = cast(list[dict[str, str]], await pipe.execute())
        totals: dict[str, float] = {}
        for raw in replies:
            for field, value in raw.items():
                totals[field] = totals.get(field, 0.0) + float(value)
        return totals
