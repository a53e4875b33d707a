"""Events of a task's lock: every acquisition, conflict, loss, expiry and release."""

from __future__ import annotations

from libs.events.envelope import Event

__all__ = [
    "LockAcquired",
    "LockConflict",
    "LockEvent",
    "LockExpired",
    "LockLost",
    "LockReleased",
]


class LockAcquired(Event, frozen=True, kw_only=True, tag="lock.acquired"):
    """`run_id` took the task's lock with fencing token `fence` for `ttl_ms`."""

    ttl_ms: int
    by: str = ""  # "gateway" (on request) or "runner" (re-acquired after expiry)


class LockConflict(Event, frozen=True, kw_only=True, tag="lock.conflict"):
    """A request (`run_id`) was refused with 409 because `holder_run_id` has the task.
    `layer` is the check that caught it: "precheck", "lock" or "db"."""

    layer: str
    holder_run_id: str = ""
    expires_at: float | None = None


class LockLost(Event, frozen=True, kw_only=True, tag="lock.lost"):
    """The runner of `run_id` found its lock gone or taken when it tried to extend or write."""

    reason: str


class LockExpired(Event, frozen=True, kw_only=True, tag="lock.expired"):
    """The lock of `run_id` (with `fence`) lapsed before the run released it."""

    reason: str = ""


class LockReleased(Event, frozen=True, kw_only=True, tag="lock.released"):
    pass


LockEvent = LockAcquired | LockConflict | LockLost | LockExpired | LockReleased
