"""Timing helpers shared by the benchmarks: progress lines, percentiles, per-call latencies.

Every benchmark reports p99 the same way (nearest rank, `percentile`), so their figures compare.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

__all__ = ["log", "median_p99_ms", "percentile", "time_each"]

T = TypeVar("T")

_STARTED = time.perf_counter()


def log(message: str) -> None:
    """Progress, on stderr, stamped with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _STARTED:5.1f} s] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `q` % of `values` at or below
    it (`q` from 0 to 100)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def median_p99_ms(latencies: list[float]) -> tuple[float, float]:
    """Median and p99 of latencies in seconds, in milliseconds."""
    return statistics.median(latencies) * 1000, percentile(latencies, 99) * 1000


async def time_each(call: Callable[[T], Awaitable[object]], items: Iterable[T]) -> list[float]:
    """`await call(item)` for each item, one after the other; the seconds each one took."""
    latencies = []
    for item in items:
        started = time.perf_counter()
        await call(item)
        latencies.append(time.perf_counter() - started)
    return latencies
