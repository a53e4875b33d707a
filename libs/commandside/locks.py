"""The task lock: a lease in Redis with a fencing token from `INCR`. Every script touches only
the task's keys, which share the partition's hash tag (one slot on Redis Cluster).

A lock's token is "<run_id>:<fence>:<holder>:<nonce>": the run, its fence, who holds the lease
("gateway" for the reservation an admission makes, else the runner's worker name) and a random
nonce drawn for each acquisition, so no two acquisitions ever share a token. Each acquisition
also records the run's newest fence (`…:lock:run:<run_id>`), which fenced reports compare with.

- `acquire` (the gateway): if the lock is free, `INCR` a fence and `SET` the token `PX` ttl.
- `take_over` (a runner starting a run): a run that has ended (its outcome marker) is not taken;
  the admission's reservation of this run at the command's fence is adopted under a token naming
  the runner (the reservation never executes anything, and once renamed it can be adopted by no
  one else); a free lock is re-acquired under a NEW fence (`INCR`) and token; a lock held by
  anyone else, another runner of the same run included, is never taken: it is only free once
  its holder stops extending it and it lapses.
- `extend` and `release`: compare-and-extend and compare-and-delete on the exact token.
- `seize_for_report`: the fence check of a run's failure or superseded report (see there).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from libs.events.names import Keys

__all__ = ["GATEWAY", "Holder", "Lease", "ReportSlot", "TaskLocks", "lock_token"]

GATEWAY = "gateway"  # the holder named in an admission's reservation

# A run's newest fence is kept a week (EX 604800), as long as its outcome marker.
# KEYS: lock, fence, run fence. ARGV: run_id, holder, nonce, ttl_ms.
# -> {1, fence, token} | {0, holder_token, pttl}
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder then
  return {0, holder, redis.call('PTTL', KEYS[1])}
end
local fence = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. ':' .. fence .. ':' .. ARGV[2] .. ':' .. ARGV[3]
redis.call('SET', KEYS[1], token, 'PX', ARGV[4])
redis.call('SET', KEYS[3], fence, 'EX', 604800)
return {1, fence, token}
"""

# KEYS: lock, fence, run fence, run outcome. ARGV: run_id, command fence, holder, nonce, ttl_ms.
# -> {1, fence, token} adopted the reservation | {2, fence, token, previous fence} re-acquired
#    | {0, holder_token, pttl} held by someone else | {3} the run has ended
_TAKE_OVER = """
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {3}
end
local holder = redis.call('GET', KEYS[1])
local reservation = ARGV[1] .. ':' .. ARGV[2] .. ':gateway:'
if holder and string.sub(holder, 1, #reservation) == reservation then
  local token = ARGV[1] .. ':' .. ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4]
  redis.call('SET', KEYS[1], token, 'PX', ARGV[5])
  redis.call('SET', KEYS[3], ARGV[2], 'EX', 604800)
  return {1, tonumber(ARGV[2]), token}
end
if holder then
  return {0, holder, redis.call('PTTL', KEYS[1])}
end
local previous = tonumber(redis.call('GET', KEYS[3]) or ARGV[2])
local fence = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. ':' .. fence .. ':' .. ARGV[3] .. ':' .. ARGV[4]
redis.call('SET', KEYS[1], token, 'PX', ARGV[5])
redis.call('SET', KEYS[3], fence, 'EX', 604800)
return {2, fence, token, previous}
"""

# KEYS: lock, run fence, run outcome. ARGV: run_id, fence ('' for the run's newest), fence if
# none is recorded, holder, nonce, ttl_ms, the reporter's own token ('' for none).
# -> {state, fence, token or holder}; see `seize_for_report`.
_SEIZE_FOR_REPORT = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {'ended', 0, ''}
end
local newest = tonumber(redis.call('GET', KEYS[2]) or ARGV[3])
local fence = newest
if ARGV[2] ~= '' then fence = tonumber(ARGV[2]) end
if newest > fence then
  return {'newer', newest, ''}
end
local holder = redis.call('GET', KEYS[1])
if holder and holder == ARGV[7] then
  return {'held', fence, holder}
end
local mine = ARGV[1] .. ':' .. fence .. ':'
local reservation = mine .. 'gateway:'
if holder and string.sub(holder, 1, #reservation) ~= reservation then
  if string.sub(holder, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
    return {'busy', fence, holder}
  end
  return {'other', fence, holder}
end
local token = mine .. ARGV[4] .. ':' .. ARGV[5]
redis.call('SET', KEYS[1], token, 'PX', ARGV[6])
return {'seized', fence, token}
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


def lock_token(run_id: str, fence: int, holder: str, nonce: str) -> str:
    return f"{run_id}:{fence}:{holder}:{nonce}"


def _nonce() -> str:
    return uuid.uuid4().hex[:12]


def _holder_name(name: str) -> str:
    """A holder name fit for a token: no ':' (the token's separator)."""
    return name.replace(":", "_") or "runner"


def _not_a_reservation(holder: str) -> str:
    """A runner's or reporter's holder name: never "gateway", or a runner would adopt its token
    as an admission's reservation."""
    name = _holder_name(holder)
    if name == GATEWAY:
        raise ValueError(f"{GATEWAY!r} names admissions' reservations, not a runner or reporter")
    return name


@dataclass(frozen=True, slots=True)
class Lease:
    """A lock this process holds: `token` is what every fenced write presents. `reacquired`:
    a runner took it under a new fence after the run's `previous_fence` lapsed."""

    task_id: int
    run_id: str
    fence: int
    ttl_ms: int
    token: str
    reacquired: bool = False
    previous_fence: int = 0


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a task's lock, and until when (epoch seconds); `holder` names the gateway or
    the runner (empty for a token of the old "<run_id>:<fence>" form)."""

    run_id: str
    fence: int
    expires_at: float
    holder: str = ""


def _holder(token: str, pttl_ms: int) -> Holder:
    expires_at = time.time() + pttl_ms / 1000
    parts = token.rsplit(":", 3)
    if len(parts) == 4 and parts[1].isdigit():
        run_id, fence, holder, _nonce = parts
        return Holder(run_id=run_id, fence=int(fence), expires_at=expires_at, holder=holder)
    run_id, _, fence = token.rpartition(":")
    return Holder(run_id=run_id, fence=int(fence) if fence.isdigit() else 0, expires_at=expires_at)


ReportState = Literal["ended", "newer", "busy", "other", "held", "seized"]


@dataclass(frozen=True, slots=True)
class ReportSlot:
    """What `seize_for_report` found. `fence` is the fence the report is about; `token` the
    lock token to write it under ("held", "seized"), or the lock's holder ("busy", "other")."""

    state: ReportState
    fence: int
    token: str

    @property
    def writable(self) -> bool:
        return self.state in ("held", "seized")


class TaskLocks:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._acquire = redis.register_script(_ACQUIRE)
        self._take_over = redis.register_script(_TAKE_OVER)
        self._seize = redis.register_script(_SEIZE_FOR_REPORT)
        self._extend = redis.register_script(_EXTEND)
        self._release = redis.register_script(_RELEASE)

    def run_fence_key(self, task_id: int, run_id: str) -> str:
        """The newest fence any acquisition of this run took (in the task's hash slot)."""
        return f"{self.keys.task_lock(task_id)}:run:{run_id}"

    async def holder(self, task_id: int) -> Holder | None:
        """The live holder, if any (the up-front check)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.task_lock(task_id))
            pipe.pttl(self.keys.task_lock(task_id))
            token, pttl = await pipe.execute()
        if token is None or pttl < 0:
            return None
        return _holder(token, pttl)

    async def acquire(
        self, task_id: int, run_id: str, ttl_ms: int, *, holder: str = GATEWAY
    ) -> Lease | Holder:
        """Take the free lock under a new fence (the gateway's reservation by default)."""
        keys = [
            self.keys.task_lock(task_id),
            self.keys.task_fence(task_id),
            self.run_fence_key(task_id, run_id),
        ]
        reply = await self._acquire(
            keys=keys, args=[run_id, _holder_name(holder), _nonce(), ttl_ms]
        )
        if reply[0] == 1:
            return Lease(task_id, run_id, int(reply[1]), ttl_ms, token=str(reply[2]))
        return _holder(reply[1], int(reply[2]))

    async def take_over(
        self, task_id: int, run_id: str, fence: int, ttl_ms: int, *, holder: str = "runner"
    ) -> Lease | Holder | None:
        """A runner's start of the run admitted at `fence` (see the module's rules): a Lease
        under a token naming `holder`, the Holder when someone else has the lock, or None when
        the run has already ended."""
        name = _not_a_reservation(holder)
        keys = [
            self.keys.task_lock(task_id),
            self.keys.task_fence(task_id),
            self.run_fence_key(task_id, run_id),
            self.keys.run_outcome(task_id, run_id),
        ]
        reply = await self._take_over(keys=keys, args=[run_id, fence, name, _nonce(), ttl_ms])
        if reply[0] == 3:
            return None
        if reply[0] == 0:
            return _holder(reply[1], int(reply[2]))
        reacquired = reply[0] == 2
        return Lease(
            task_id=task_id,
            run_id=run_id,
            fence=int(reply[1]),
            ttl_ms=ttl_ms,
            token=str(reply[2]),
            reacquired=reacquired,
            previous_fence=int(reply[3]) if reacquired else 0,
        )

    async def seize_for_report(
        self,
        task_id: int,
        run_id: str,
        *,
        fence: int | None,
        fallback_fence: int,
        holder: str,
        ttl_ms: int,
        own_token: str = "",
    ) -> ReportSlot:
        """The fence check of a report that a run failed or was superseded, made about the
        run at `fence` (None: at the newest fence the run took; `fallback_fence` when none is
        recorded). In one step:

        - "ended": the run has an outcome already; "newer": a later acquisition of this run
          took a newer fence, so a newer holder (maybe live) speaks for it: write nothing;
        - "held": the lock is `own_token`, still the reporter's: write under it;
        - "seized": the lock was free, or was this run's admission reservation at that fence
          (no runner ever took it): it now holds a token of the reporter at that same fence,
          for `ttl_ms`, to write the report under; release it after;
        - "busy": another holder of this run has the lock: it is alive, and reports itself;
        - "other": another run has the lock (this run cannot write under it).
        """
        keys = [
            self.keys.task_lock(task_id),
            self.run_fence_key(task_id, run_id),
            self.keys.run_outcome(task_id, run_id),
        ]
        args = [
            run_id,
            "" if fence is None else fence,
            fallback_fence if fence is None else fence,
            _not_a_reservation(holder),
            _nonce(),
            ttl_ms,
            own_token,
        ]
        state, at, token = await self._seize(keys=keys, args=args)
        return ReportSlot(state=state, fence=int(at), token=str(token))

    async def extend(self, lease: Lease) -> bool:
        """Compare-and-extend: False when the lease is no longer ours."""
        extended = await self._extend(
            keys=[self.keys.task_lock(lease.task_id)], args=[lease.token, lease.ttl_ms]
        )
        return bool(extended)

    async def release(self, lease: Lease) -> bool:
        """Compare-and-delete: False when the lease had already lapsed or was taken."""
        return await self.release_token(lease.task_id, lease.token)

    async def release_token(self, task_id: int, token: str) -> bool:
        """Compare-and-delete of the lock held with `token`."""
        released = await self._release(keys=[self.keys.task_lock(task_id)], args=[token])
        return bool(released)
