"""A run's work and the keeper of its lease in one TaskGroup: every way out of it.

The lease operations are plain async functions here (what a compare-and-extend and a claim
refresh answer, or the errors Redis and the database raise), so each exit is exact and quick;
tests/integration/test_lease_keeper.py runs the same keeper against a real Redis that stalls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError

from services.runner.lease import LeaseLost, keep_lease, run_guarded
from tests.eventually import eventually

TTL_S = 0.6  # the keeper extends every 0.2 s


@dataclass
class LeaseOps:
    """What the keeper's extensions and refreshes answer: each call takes the next item of
    its script (True/False, or an exception to raise), then keeps answering the last one."""

    extends: list[bool | BaseException] = field(default_factory=lambda: [True])
    refreshes: list[bool | BaseException] = field(default_factory=lambda: [True])
    extend_calls: int = 0
    refresh_calls: int = 0
    hang: asyncio.Event | None = None  # when set up, an extension waits for it

    async def extend(self) -> bool:
        self.extend_calls += 1
        if self.hang is not None:
            await self.hang.wait()
        return _answer(self.extends, self.extend_calls)

    async def refresh(self) -> bool:
        self.refresh_calls += 1
        return _answer(self.refreshes, self.refresh_calls)

    def keeper(self, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        return keep_lease(
            self.extend,
            self.refresh,
            ttl_s=TTL_S,
            confirmed_at=time.monotonic(),
            stop=stop,
        )


def _answer(script: list[bool | BaseException], call: int) -> bool:
    item = script[min(call, len(script)) - 1]
    if isinstance(item, BaseException):
        raise item
    return item


@dataclass
class Work:
    """The run's work: waits until `release` is set, then returns `result` or raises `error`."""

    result: str = "the answer"
    error: Exception | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False

    async def __call__(self) -> str:
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        return self.result


def only_this_task_left() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


async def test_work_that_finishes_returns_its_result_and_stops_the_keeper() -> None:
    ops, work = LeaseOps(), Work()
    guarded = asyncio.create_task(run_guarded(work(), ops.keeper))
    await eventually(lambda: ops.extend_calls >= 2, message="the keeper never extended twice")
    work.release.set()

    assert await guarded == "the answer"
    assert ops.refresh_calls >= 1
    assert only_this_task_left()  # the keeper ended with the group, nothing left behind


async def test_work_that_fails_raises_its_own_error_and_stops_the_keeper() -> None:
    ops, work = LeaseOps(), Work(error=ValueError("the model said no"))
    guarded = asyncio.create_task(run_guarded(work(), ops.keeper))
    await eventually(lambda: ops.extend_calls >= 1, message="the keeper never extended")
    work.release.set()

    with pytest.raises(ValueError, match="the model said no"):
        await guarded  # the error itself, not an ExceptionGroup
    assert only_this_task_left()


async def test_a_refused_extension_is_a_lost_lease_and_cancels_the_work() -> None:
    ops, work = LeaseOps(extends=[True, False]), Work()

    with pytest.raises(LeaseLost, match="expired or was taken"):
        await run_guarded(work(), ops.keeper)
    assert work.cancelled
    assert ops.extend_calls == 2
    assert only_this_task_left()


async def test_transient_errors_are_retried_and_the_run_goes_on_once_redis_answers() -> None:
    ops = LeaseOps(
        extends=[
            RedisConnectionError("Connection reset by peer"),
            RedisTimeoutError("Timeout reading from socket"),
            ResponseError("LOADING Redis is loading the dataset in memory"),
            True,
        ]
    )
    work = Work()
    guarded = asyncio.create_task(run_guarded(work(), ops.keeper))
    await eventually(lambda: ops.extend_calls >= 5, message="the keeper stopped extending")
    work.release.set()

    assert await guarded == "the answer"
    assert not work.cancelled


async def test_a_database_error_on_the_claim_refresh_is_ridden_out() -> None:
    db_down = OperationalError("UPDATE run_claims", {}, Exception("server closed the connection"))
    ops, work = LeaseOps(refreshes=[db_down, db_down, True]), Work()
    guarded = asyncio.create_task(run_guarded(work(), ops.keeper))
    await eventually(lambda: ops.refresh_calls >= 3, message="the keeper stopped refreshing")
    work.release.set()

    assert await guarded == "the answer"


async def test_errors_until_the_ttl_has_passed_lose_the_lease() -> None:
    ops, work = LeaseOps(extends=[RedisConnectionError("Connection refused")]), Work()
    started = time.monotonic()

    with pytest.raises(LeaseLost, match="within its TTL") as lost:
        await run_guarded(work(), ops.keeper)
    assert "Connection refused" in lost.value.reason
    assert time.monotonic() - started >= TTL_S
    assert work.cancelled
    assert ops.extend_calls > 2  # retried with backoff in between


async def test_an_extension_that_never_answers_loses_the_lease_when_the_ttl_is_up() -> None:
    ops, work = LeaseOps(hang=asyncio.Event()), Work()

    with pytest.raises(LeaseLost, match="within its TTL"):
        await run_guarded(work(), ops.keeper)
    assert work.cancelled


async def test_a_claim_that_moved_on_is_a_lost_lease() -> None:
    ops, work = LeaseOps(refreshes=[False]), Work()

    with pytest.raises(LeaseLost, match="claim was ended or taken"):
        await run_guarded(work(), ops.keeper)
    assert work.cancelled


async def test_an_unexpected_keeper_error_loses_the_lease_rather_than_leaving_it_unkept() -> None:
    ops, work = LeaseOps(extends=[RuntimeError("a bug")]), Work()

    with pytest.raises(LeaseLost, match="keeper failed: RuntimeError: a bug"):
        await run_guarded(work(), ops.keeper)
    assert work.cancelled


async def test_the_keeper_is_never_cancelled_in_the_middle_of_a_claim_refresh() -> None:
    """A database call cancelled half-way can strand its connection: when the work ends (here
    with an error) during a refresh, the keeper finishes the refresh, then stops."""
    in_flight, gate = asyncio.Event(), asyncio.Event()
    refresh_cancelled = False

    async def slow_refresh() -> bool:
        nonlocal refresh_cancelled
        in_flight.set()
        try:
            await gate.wait()
        except asyncio.CancelledError:
            refresh_cancelled = True
            raise
        return True

    async def failing_work() -> str:
        await in_flight.wait()
        asyncio.get_running_loop().call_soon(gate.set)  # the refresh answers after the failure
        raise ValueError("failed while a refresh was in flight")

    def keeper(stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        return keep_lease(
            LeaseOps().extend,
            slow_refresh,
            ttl_s=TTL_S,
            confirmed_at=time.monotonic(),
            stop=stop,
        )

    with pytest.raises(ValueError, match="in flight"):
        await run_guarded(failing_work(), keeper)
    assert not refresh_cancelled
    assert only_this_task_left()
