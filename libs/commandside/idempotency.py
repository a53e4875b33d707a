"""`Idempotency-Key` on `POST /run-agents`: a client's retry gets the run its first try started.

A 409 only stops concurrent duplicates: a retry sent after the first run had finished would run
the task again. With the header, the first request records key -> run in Redis,
per task, in the task's hash slot. A later request with the same key and the same body is
answered with that run instead of starting another; the same key with a different body is a 422.

The record is written before admission as a short "pending" lease and made durable (the full
TTL, with the run's fence) once the run is queued. A refused or failed admission deletes it, so
the key can be used again; a gateway that dies in between leaves a lease that lapses by itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis

from libs.commandside.errors import InvalidIdempotencyKey, UnsettledIdempotencyKey
from libs.events import Keys

__all__ = [
    "EarlierRequest",
    "IdempotencyKeys",
    "IdempotencyRecord",
    "Reservation",
    "checked_idempotency_key",
    "request_fingerprint",
]

MAX_KEY_LENGTH = 255
PENDING_LEASE_MS = 60_000

# Compare-and-set / compare-and-delete: only the request that wrote the record may change it.
_CONFIRM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""
_FORGET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class IdempotencyRecord(msgspec.Struct, frozen=True):
    """What a key stands for: the run it started and the request that started it. `fence` is 0
    while the first request is still being admitted."""

    run_id: str
    fingerprint: str
    fence: int = 0


@dataclass(frozen=True, slots=True)
class Reservation:
    """This request owns the key: it must confirm it once the run is queued, or forget it."""

    redis_key: str
    record: IdempotencyRecord


@dataclass(frozen=True, slots=True)
class EarlierRequest:
    """An earlier request holds the key."""

    record: IdempotencyRecord


def checked_idempotency_key(value: str | None) -> str | None:
    """An Idempotency-Key header's value, if any, once it is 1 to 255 visible ASCII
    characters (`InvalidIdempotencyKey` otherwise)."""
    if value is None:
        return None
    if not 0 < len(value) <= MAX_KEY_LENGTH or not all("!" <= c <= "~" for c in value):
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters "
            "(a UUID is a good choice)"
        )
    return value


def request_fingerprint(body: msgspec.Struct) -> str:
    """Equal for equal request bodies (a Struct encodes its fields in a fixed order)."""
    return hashlib.sha256(msgspec.json.encode(body)).hexdigest()[:32]


class IdempotencyKeys:
    """The key records of one Redis, with their compare-and-set scripts registered once."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self._confirm = redis.register_script(_CONFIRM)
        self._forget = redis.register_script(_FORGET)

    async def reserve(
        self, task_id: int, key: str, fingerprint: str, run_id: str
    ) -> Reservation | EarlierRequest:
        redis_key = self.keys.idempotency(task_id, hashlib.sha256(key.encode()).hexdigest()[:32])
        mine = IdempotencyRecord(run_id=run_id, fingerprint=fingerprint)
        for _ in range(3):  # the earlier record can lapse between our SET and GET
            if await self.redis.set(redis_key, _encode(mine), nx=True, px=PENDING_LEASE_MS):
                return Reservation(redis_key, mine)
            raw = await self.redis.get(redis_key)
            if raw is not None:
                return EarlierRequest(msgspec.json.decode(raw, type=IdempotencyRecord))
        raise UnsettledIdempotencyKey("the Idempotency-Key record kept changing; retry the request")

    async def confirm(self, reservation: Reservation, fence: int) -> None:
        """The run is queued: remember the key for `ttl_s`, with the run's fence."""
        queued = msgspec.structs.replace(reservation.record, fence=fence)
        await self._confirm(
            keys=[reservation.redis_key],
            args=[_encode(reservation.record), _encode(queued), self.ttl_s],
        )

    async def forget(self, reservation: Reservation) -> None:
        """Admission did not queue a run: free the key for the client's next try."""
        await self._forget(keys=[reservation.redis_key], args=[_encode(reservation.record)])


def _encode(record: IdempotencyRecord) -> str:
    return msgspec.json.encode(record).decode()
