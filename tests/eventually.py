"""Waiting in tests for something to become true, instead of sleeping and hoping it did.

`await eventually(check)` calls `check` (a plain or an async callable) until what it returns is
truthy, or until `until` accepts it, and returns that value; when `within` seconds have passed it
raises AssertionError with `message` and the last value seen. An exception raised by `check`
ends the wait at once. The time limit is checked between calls, never by cancelling one (a
check may be in the middle of a Redis command). `eventually_sync` is the same for blocking code
(tests that drive processes).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["eventually", "eventually_sync"]

T = TypeVar("T")

Message = str | Callable[[], str]  # a callable is asked only on failure (it may read logs)

WITHIN_S = 10.0
INTERVAL_S = 0.02


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], object] | None = None,
    within: float = WITHIN_S,
    interval: float = INTERVAL_S,
    message: Message = "the condition never held",
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T],
    *,
    until: Callable[[T], object] | None = None,
    within: float = WITHIN_S,
    interval: float = INTERVAL_S,
    message: Message = "the condition never held",
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    *,
    until: Callable[[Any], object] | None = None,
    within: float = WITHIN_S,
    interval: float = INTERVAL_S,
    message: Message = "the condition never held",
) -> Any:
    """The first value of `check()` (awaited if it is awaitable) that is truthy, or that
    `until` accepts; checked every `interval` seconds, for `within` seconds at most."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if _accepted(value, until):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_failure(message, within, value))
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], T],
    *,
    until: Callable[[T], object] | None = None,
    within: float = WITHIN_S,
    interval: float = INTERVAL_S,
    message: Message = "the condition never held",
) -> T:
    """`eventually` for blocking code: sleeps the thread between checks."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if _accepted(value, until):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_failure(message, within, value))
        time.sleep(interval)


def _accepted(value: T, until: Callable[[T], object] | None) -> bool:
    return bool(value if until is None else until(value))


def _failure(message: Message, within: float, last: object) -> str:
    text = message() if callable(message) else message
    return f"{text} (waited {within:g} s; last value: {last!r})"
