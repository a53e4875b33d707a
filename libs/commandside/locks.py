"""The task lock: `SET NX PX` with a fencing token from `INCR`, compare-and-extend,
compare-and-delete, and the runner's take-over. Every script touches only the task's lock and
fence keys, which share the partition's hash tag (one slot on Redis Cluster).

A lock's token is "<run_id>:<fence>", unique per acquisition: a run that re-acquires after its
lock lapsed gets a new fence, so an older paused copy of the same run cannot pass for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from libs.events.names import Keys

__all__ = ["Holder", "Lease", "TaskLocks", "lock_token"]

# KEYS: lock, fence. ARGV: run_id, ttl_ms. -> {1, fence} | {0, holder_token, pttl}
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder then
  return {0, holder, redis.call('PTTL', KEYS[1])}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return {1, fence}
"""

# KEYS: lock, fence. ARGV: token, run_id, ttl_ms.
# -> {1, fence} still ours (extended) | {2, fence} re-acquired after it lapsed | {0, holder, pttl}
_TAKE_OVER = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, tonumber(string.match(ARGV[1], ':(%d+)$'))}
end
if holder then
  return {0, holder, redis.call('PTTL', KEYS[1])}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[2] .. ':' .. fence, 'PX', ARGV[3])
return {2, fence}
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def lock_token(run_id: str, fence: int) -> str:
    return f"{run_id}:{fence}"


@dataclass(frozen=True, slots=True)
class Lease:
    task_id: int
    run_id: str
    fence: int
    ttl_ms: int
    reacquired: bool = False

    @property
    def token(self) -> str:
        return lock_token(self.run_id, self.fence)


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a task's lock, and until when (epoch seconds)."""

    run_id: str
    fence: int
    expires_at: float


def _holder(token: str, pttl_ms: int) -> Holder:
    run_id, _, fence = token.rpartition(":")
    return Holder(run_id=run_id, fence=int(fence or 0), expires_at=time.time() + pttl_ms / 1000)


class TaskLocks:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._acquire = redis.register_script(_ACQUIRE)
        self._take_over = redis.register_script(_TAKE_OVER)
        self._extend = redis.register_script(_EXTEND)
        self._release = redis.register_script(_RELEASE)

    def _keys(self, task_id: int) -> list[str]:
        return [self.keys.task_lock(task_id), self.keys.task_fence(task_id)]

    async def holder(self, task_id: int) -> Holder | None:
        """The live holder, if any (the up-front check)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.task_lock(task_id))
            pipe.pttl(self.keys.task_lock(task_id))
            token, pttl = await pipe.execute()
        if token is None or pttl < 0:
            return None
        return _holder(token, pttl)

    async def acquire(self, task_id: int, run_id: str, ttl_ms: int) -> Lease | Holder:
        reply = await self._acquire(keys=self._keys(task_id), args=[run_id, ttl_ms])
        if reply[0] == 1:
            return Lease(task_id=task_id, run_id=run_id, fence=int(reply[1]), ttl_ms=ttl_ms)
        return _holder(reply[1], int(reply[2]))

    async def take_over(self, task_id: int, run_id: str, fence: int, ttl_ms: int) -> Lease | Holder:
        """The runner's start: keep the gateway's lease if it still stands, or re-acquire a
        lapsed one under a new fence; a Holder when another run has the task."""
        token = lock_token(run_id, fence)
        reply = await self._take_over(keys=self._keys(task_id), args=[token, run_id, ttl_ms])
        if reply[0] == 0:
            return _holder(reply[1], int(reply[2]))
        return Lease(
            task_id=task_id,
            run_id=run_id,
            fence=int(reply[1]),
            ttl_ms=ttl_ms,
            reacquired=reply[0] == 2,
        )

    async def extend(self, lease: Lease) -> bool:
        """Compare-and-extend: False when the lease is no longer ours."""
        extended = await self._extend(
            keys=[self.keys.task_lock(lease.task_id)], args=[lease.token, lease.ttl_ms]
        )
        return bool(extended)

    async def release(self, lease: Lease) -> bool:
        """Compare-and-delete: False when the lease had already lapsed or was taken."""
        released = await self._release(
            keys=[self.keys.task_lock(lease.task_id)], args=[lease.token]
        )
        return bool(released)
