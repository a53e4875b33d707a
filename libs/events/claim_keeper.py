"""Keeping the claim on an entry in hand fresh while its handler works, so `XAUTOCLAIM` by
another member of the group never hands a live entry to a second consumer."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from libs.common.backoff import FailureStreak, pause

__all__ = ["ClaimKeeper"]

log = structlog.get_logger(__name__)

# XCLAIM resets the entry's idle time, but only while this consumer still owns it: an entry
# another member took over stays theirs.
_TOUCH_IF_OWNED = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 1 and p[1][2] == ARGV[3] then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
  return 1
end
return 0
"""


class ClaimKeeper:
    def __init__(self, redis: aioredis.Redis, group: str, consumer: str, min_idle_ms: int) -> None:
        self._touch = redis.register_script(_TOUCH_IF_OWNED)
        self.group = group
        self.consumer = consumer
        self.interval_s = max(min_idle_ms / 3000, 0.05)

    async def keep(self, stream: str, entry_id: str, handled: asyncio.Event) -> None:
        """Touch the entry every min_idle/3 until `handled` is set. Stopped by the event, not
        by cancel(): a cancel landing inside a redis-py command is sometimes swallowed, and the
        task then touched the entry forever, so a failed entry was never reclaimed nor
        dead-lettered (and its connection outlived the client)."""
        streak = FailureStreak(
            log, "consumer.keep_claim_failed", "consumer.keep_claim_recovered", entry_id=entry_id
        )
        while True:
            await pause(handled, self.interval_s)
            if handled.is_set():
                return
            try:
                await self._touch(keys=[stream], args=[self.group, entry_id, self.consumer])
            except RedisError as exc:
                streak.failed(exc, self.interval_s)
                continue
            streak.recovered()
