"""redis-py 5 types hash commands as `Awaitable[T] | T` (its sync and asyncio clients share the
signatures); on the asyncio client they always return an awaitable. `awaitable` says so to mypy
without changing anything at run time."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar, cast

__all__ = ["awaitable"]

T = TypeVar("T")


def awaitable(result: Awaitable[T] | T) -> Awaitable[T]:
    return cast(Awaitable[T], result)
