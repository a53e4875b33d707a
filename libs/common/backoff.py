"""Riding out a dependency's outage: capped exponential backoff with full jitter, one log line
per failure streak (and one when it ends), and which Redis errors pass once the server is back.

A long-lived loop (a consumer group, the SSE hub, a supervisor) wraps each step like this::

    backoff, streak = Backoff(), FailureStreak(log, "x.redis_unavailable", "x.redis_recovered")
    while not stop.is_set():
        try:
            await step()
        except RedisError as exc:
            if not is_transient(exc):
                raise
            await pause(stop, streak.failed(exc, backoff.next_delay()))
            continue
        if streak.recovered():
            backoff.reset()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ClusterDownError, ReadOnlyError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Backoff", "FailureStreak", "is_nogroup", "is_transient", "pause"]

# Replies of a server that is restarting, failing over or came back without a consumer group.
# UNBLOCKED: the stream a blocking XREADGROUP waited on was deleted meanwhile (Redis >= 7)
_TRANSIENT_REPLIES = ("NOGROUP", "UNBLOCKED", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def is_transient(exc: BaseException) -> bool:
    """Whether a Redis error passes once the server is back: the connection went (restart,
    failover, network blip, CLIENT KILL), a timeout, the server still loading its data
    (BusyLoadingError is a ConnectionError), a replica that is read-only mid-failover, a
    cluster whose slots are not all served for a moment (CLUSTERDOWN, TRYAGAIN), or a
    consumer group missing because the server came back empty (NOGROUP)."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | ReadOnlyError):
        return True
    if isinstance(exc, ClusterDownError | TryAgainError):  # a cluster mid-failover or resharding
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_TRANSIENT_REPLIES)


def is_nogroup(exc: BaseException) -> bool:
    """The consumer group (or its stream) does not exist, or the stream was deleted under a
    blocking read: recreate it with MKSTREAM."""
    return isinstance(exc, ResponseError) and str(exc).startswith(("NOGROUP", "UNBLOCKED"))


@dataclass
class Backoff:
    """Delays of `base_s * factor**n`, capped at `cap_s`; with `jitter` ("full jitter") each
    delay is drawn uniformly from [0, that], so many clients that lost the same server do not
    all come back in the same instant."""

    base_s: float = 0.1
    cap_s: float = 5.0
    factor: float = 2.0
    jitter: bool = True
    attempt: int = field(default=0, init=False)

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * self.factor**self.attempt)
        if ceiling < self.cap_s:  # stop counting once capped: the power never overflows
            self.attempt += 1
        return random.uniform(0.0, ceiling) if self.jitter else ceiling

    def reset(self) -> None:
        self.attempt = 0


class FailureStreak:
    """Logs the first failure of a streak as a warning (`failed_event`, with the error) and its
    end as info (`recovered_event`, with how many failures and for how long), nothing between:
    an outage is two lines, however long it lasts."""

    def __init__(self, log: Any, failed_event: str, recovered_event: str, **context: Any) -> None:
        self.log = log
        self.failed_event = failed_event
        self.recovered_event = recovered_event
        self.context = context
        self.failures = 0
        self.since = 0.0
        self.last_error = ""

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, exc: BaseException, retry_in_s: float) -> float:
        """Count a failure (logged if it starts a streak); returns `retry_in_s`."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.failures == 0:
            self.since = time.monotonic()
            self.log.warning(
                self.failed_event,
                error=self.last_error,
                retry_in_s=round(retry_in_s, 3),
                **self.context,
            )
        self.failures += 1
        return retry_in_s

    def recovered(self) -> bool:
        """End the streak, if there is one (logged); returns whether there was."""
        if self.failures == 0:
            return False
        self.log.info(
            self.recovered_event,
            failures=self.failures,
            down_s=round(time.monotonic() - self.since, 3),
            **self.context,
        )
        self.failures = 0
        self.last_error = ""
        return True


async def pause(stop: asyncio.Event, delay_s: float) -> None:
    """Wait `delay_s`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay_s)
