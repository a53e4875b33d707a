"""Events of a task's lock: every acquisition, conflict, loss, expiry and release."""

from __future__ import annotations

from typing import Literal, get_args

from libs.events.envelope import Event

__all__ = [
    "CONFLICT_LAYERS",
    "AcquiredBy",
    "ConflictLayer",
    "LockAcquired",
    "LockConflict",
    "LockEvent",
    "LockExpired",
    "LockLost",
    "LockReleased",
]

# The duplicate-protection check that refused a run: the up-front look at the lock, the lock
# itself, or the database claim.
ConflictLayer = Literal["precheck", "lock", "db"]
CONFLICT_LAYERS: tuple[ConflictLayer, ...] = get_args(ConflictLayer)

# Who took a lock: the gateway on request, or a runner that re-acquired it after it lapsed
# ("" in events written before the field existed).
AcquiredBy = Literal["gateway", "runner", ""]


class LockAcquired(Event, frozen=True, kw_only=True, tag="lock.acquired"):
    """`run_id` took the task's lock with fencing token `fence` for `ttl_ms`."""

    ttl_ms: int
    by: AcquiredBy = ""


class LockConflict(Event, frozen=True, kw_only=True, tag="lock.conflict"):
    """A request (`run_id`) was refused with 409 because `holder_run_id` has the task.
    `layer` is the check that caught it: "precheck", "lock" or "db"."""

    layer: ConflictLayer
    holder_run_id: str = ""
    expires_at: float | None = None


class LockLost(Event, frozen=True, kw_only=True, tag="lock.lost"):
    """The runner of `run_id` found its lock gone or taken when it tried to extend or write."""

    reason: str


class LockExpired(Event, frozen=True, kw_only=True, tag="lock.expired"):
    """The lock of `run_id` (with `fence`) lapsed before the run released it."""

    reason: str = ""


class LockReleased(Event, frozen=True, kw_only=True, tag="lock.released"):
    """The run released the task's lock (in the same step as this event): the task is free."""


LockEvent = LockAcquired | LockConflict | LockLost | LockExpired | LockReleased
