"""A run's work under its lease, as structured concurrency: one TaskGroup holds the work and
the keeper of its lease, and neither outlives the other.

- the work ends (an answer, or its own error): the keeper is told to stop (an event, never a
  cancel: it may be in the middle of a database call), and ends after the call in hand; the
  work's result or error is the outcome;
- the keeper finds the lease gone (compare-and-extend refused, the claim moved on, or no
  extension got through for a whole TTL): it raises `LeaseLost`, the work is cancelled, and
  `LeaseLost` is the outcome.

The keeper extends every third of the TTL. A transient error (Redis connection or timeout,
SQLAlchemy `DBAPIError`) is retried with a short backoff until the TTL, counted from the
sending of the last extension that got through, has passed: only then is the lease lost
(Redis lets the lock lapse at about the same moment). A failed claim refresh is retried at the next
extension: the lock, not the claim's expiry, keeps other runs out while the run holds it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import structlog
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from libs.common.backoff import Backoff, FailureStreak, is_transient, pause
from libs.common.errors import RagpocError

__all__ = ["LeaseLost", "is_transient_error", "keep_lease", "run_guarded"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

BACKOFF_BASE_S = 0.05  # the first retry of a failed extension, doubling up to a tenth of the TTL


class LeaseLost(RagpocError):
    """The run's lease lapsed or was taken: its work was stopped, and its writes are refused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_transient_error(exc: BaseException) -> bool:
    """A Redis error that passes once the server is back, or any DB-API error (a dropped
    connection, a timeout, a database restarting: SQLAlchemy's `OperationalError` and kin)."""
    return (isinstance(exc, RedisError) and is_transient(exc)) or isinstance(exc, DBAPIError)


async def keep_lease(
    extend: Callable[[], Awaitable[bool]],
    refresh: Callable[[], Awaitable[bool]],
    *,
    ttl_s: float,
    confirmed_at: float,
    stop: asyncio.Event,
) -> None:
    """Extend the lease every ttl/3 (then refresh the claim) until `stop` is set; raise
    `LeaseLost` once it is gone. `confirmed_at`: the `time.monotonic()` at which the request
    that last took or extended the lease was sent. Any other error of the keeper's is a
    `LeaseLost` too (logged): with no one extending it, the lease is as good as gone."""
    try:
        while True:
            await pause(stop, ttl_s / 3)
            if stop.is_set():
                return
            confirmed_at = await _extend(extend, ttl_s, confirmed_at, stop)
            if stop.is_set():
                return
            await _refresh(refresh)
    except LeaseLost as lost:
        log.warning("run.lease_lost", reason=lost.reason)
        raise
    except Exception as exc:
        log.exception("run.lease_keeper_failed")
        raise LeaseLost(f"the lease keeper failed: {type(exc).__name__}: {exc}") from exc


async def _refresh(refresh: Callable[[], Awaitable[bool]]) -> None:
    """Refresh the claim; a transient failure waits for the next extension."""
    try:
        refreshed = await refresh()
    except Exception as exc:
        if not is_transient_error(exc):
            raise
        log.warning("run.claim_refresh_failed", error=f"{type(exc).__name__}: {exc}")
        return
    if not refreshed:
        raise LeaseLost("the run's claim was ended or taken while the run was working")


async def _extend(
    extend: Callable[[], Awaitable[bool]], ttl_s: float, confirmed_at: float, stop: asyncio.Event
) -> float:
    """One extension, retried on transient errors while the lease can still be alive; the
    monotonic time the successful request was sent."""
    backoff = Backoff(base_s=BACKOFF_BASE_S, cap_s=max(ttl_s / 10, BACKOFF_BASE_S), jitter=False)
    streak = FailureStreak(log, "run.lease_extend_failed", "run.lease_extend_recovered")
    while not stop.is_set():
        sent = time.monotonic()
        remaining = confirmed_at + ttl_s - sent
        if remaining <= 0:
            raise LeaseLost(
                f"the task lock could not be extended within its TTL ({ttl_s:g} s): "
                f"{streak.last_error or 'the runner was too slow'}"
            )
        try:
            async with asyncio.timeout(remaining):
                extended = await extend()
        except TimeoutError:
            streak.failed(TimeoutError("no answer before the lease would lapse"), 0)
            continue
        except Exception as exc:
            if not is_transient_error(exc):
                raise
            await pause(stop, min(streak.failed(exc, backoff.next_delay()), remaining))
            continue
        streak.recovered()
        if not extended:
            raise LeaseLost("the task lock expired or was taken while the run was working")
        return sent
    return confirmed_at


async def run_guarded(
    work: Coroutine[Any, Any, T],
    keeper: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
) -> T:
    """Run `work` while `keeper(stop)` keeps its lease, in one TaskGroup (see the module).
    Raises `LeaseLost` if the keeper did, else the work's own error, unwrapped."""
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as group:
            working = group.create_task(_settled(work))
            working.add_done_callback(lambda _: stop.set())
            group.create_task(keeper(stop))
    except BaseExceptionGroup as failed:
        raise _first(failed) from None
    settled = working.result()
    if settled.error is not None:
        raise settled.error
    return cast(T, settled.value)


@dataclass(frozen=True, slots=True)
class _Settled:
    value: object = None
    error: Exception | None = None


async def _settled(work: Coroutine[Any, Any, object]) -> _Settled:
    """The work's result or error as a value: an error of the work's must not make the group
    cancel the keeper, which may be in the middle of a database call (a call cancelled there
    can strand its connection); the keeper ends by `stop` instead, after that call."""
    try:
        return _Settled(value=await work)
    except Exception as exc:
        return _Settled(error=exc)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that explains the group: a `LeaseLost` (the work's own error then is only
    its consequence), else the first."""
    lost = group.subgroup(LeaseLost)
    chosen: BaseException = lost if lost is not None else group
    while isinstance(chosen, BaseExceptionGroup):
        chosen = chosen.exceptions[0]
    return chosen
