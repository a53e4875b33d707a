"""What `bench.bench_scale` measured in one case, and the tables it prints: medians over the
rounds, ratios against the 1-runner single-node case, and Redis commands per run."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Measurement", "print_report"]

Ops = dict[str, tuple[int, int]]  # command -> (calls, usec)

MIN_CALLS_PER_RUN = 0.05  # commands rarer than this per run are left out of the op tables


@dataclass
class Measurement:
    """One case, one round: the drain, and what Redis did for it and for the admission."""

    backend: str
    runners: int
    runs: int
    seconds: float  # first run.started to last terminal event
    redis_cpu_s: float  # over the drain, every server process
    idle_redis_cpu_per_s: float  # the same processes with nothing to do, CPU s per s
    app_cpu_s: float  # runners, projector, gateway, ingestor, mockai over the drain
    admit_redis_cpu_s: float  # over the POST /run-agents of every run
    ops_admit: Ops = field(default_factory=dict)
    ops_drain: Ops = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.runs / self.seconds

    @property
    def redis_ms_per_run(self) -> float:
        return self.redis_cpu_s / self.runs * 1000

    @property
    def redis_busy_ms_per_run(self) -> float:
        """Redis CPU per run above what the servers spend idle over the same seconds."""
        idle = self.idle_redis_cpu_per_s * self.seconds
        return max(self.redis_cpu_s - idle, 0.0) / self.runs * 1000

    @property
    def app_ms_per_run(self) -> float:
        return self.app_cpu_s / self.runs * 1000

    @property
    def admit_ms_per_run(self) -> float:
        return self.admit_redis_cpu_s / self.runs * 1000


Case = tuple[str, int]


def _median(ms: list[Measurement], value: Callable[[Measurement], float]) -> float:
    return statistics.median(value(m) for m in ms)


def _by_case(results: list[Measurement]) -> dict[Case, list[Measurement]]:
    cases: dict[Case, list[Measurement]] = {}
    for m in results:
        cases.setdefault((m.backend, m.runners), []).append(m)
    return cases


def _ops_per_run(ms: list[Measurement], admit: bool) -> dict[str, tuple[float, float]]:
    """Median calls per run and median usec per call, by command, over the rounds."""
    names = {name for m in ms for name in (m.ops_admit if admit else m.ops_drain)}
    out = {}
    for name in names:
        calls, usec = [], []
        for m in ms:
            got = (m.ops_admit if admit else m.ops_drain).get(name, (0, 0))
            calls.append(got[0] / m.runs)
            usec.append(got[1] / got[0] if got[0] else 0.0)
        out[name] = (statistics.median(calls), statistics.median(usec))
    return out


def _print_ops(title: str, columns: dict[str, dict[str, tuple[float, float]]]) -> None:
    """One row per command, one `calls/run (usec/call)` column per case."""
    shown = sorted(
        {n for ops in columns.values() for n, (c, _) in ops.items() if c >= MIN_CALLS_PER_RUN},
        key=lambda n: -max(ops.get(n, (0.0, 0.0))[0] for ops in columns.values()),
    )
    print(f"\n{title}")
    print(f"{'command':<14}" + "".join(f"{label:>20}" for label in columns))
    for name in shown:
        cells = []
        for ops in columns.values():
            calls, usec = ops.get(name, (0.0, 0.0))
            cells.append(f"{calls:8.2f} ({usec:5.1f} us)" if calls else f"{'-':>18}")
        print(f"{name:<14}" + "".join(f"{cell:>20}" for cell in cells))
    for label, ops in columns.items():
        calls = sum(c for c, _ in ops.values())
        usec = sum(c * u for c, u in ops.values())
        print(f"  {label}: {calls:.1f} commands/run, {usec / 1000:.3f} ms of command time/run")


def print_report(results: list[Measurement], concurrency: int, rounds: int) -> None:
    cases = _by_case(results)
    if not cases:
        return
    base = cases.get(("single", 1)) or next(iter(cases.values()))
    base_rate = _median(base, lambda m: m.rate)
    base_cpu = _median(base, lambda m: m.redis_ms_per_run)
    print(
        f"\nmockai instant, RAGPOC_RUNNER_CONCURRENCY={concurrency} per runner, "
        f"{base[0].runs} runs per case, medians of {rounds} round(s); ratios against "
        f"{base[0].backend} x{base[0].runners}"
    )
    head = (
        f"{'backend':<8} {'runners':>7} {'runs':>5} {'seconds':>8} {'runs/s':>8} "
        f"{'Redis ms/run':>13} {'above idle':>11} {'services ms/run':>16} "
        f"{'runs/s ratio':>13} {'Redis/run ratio':>16}"
    )
    print(head)
    for (backend, runners), ms in cases.items():
        rate = _median(ms, lambda m: m.rate)
        cpu = _median(ms, lambda m: m.redis_ms_per_run)
        print(
            f"{backend:<8} {runners:>7} {ms[0].runs:>5} {_median(ms, lambda m: m.seconds):>8.2f} "
            f"{rate:>8.1f} {cpu:>13.3f} {_median(ms, lambda m: m.redis_busy_ms_per_run):>11.3f} "
            f"{_median(ms, lambda m: m.app_ms_per_run):>16.2f} "
            f"{rate / base_rate:>12.2f}x {cpu / base_cpu:>15.2f}x"
        )
    print("\nRedis while idle (CPU ms per s, every server process) and during the admission:")
    for backend in dict.fromkeys(b for b, _ in cases):
        ms = [m for (b, _), group in cases.items() if b == backend for m in group]
        print(
            f"  {backend}: idle {_median(ms, lambda m: m.idle_redis_cpu_per_s) * 1000:.1f} ms/s; "
            f"POST /run-agents {_median(ms, lambda m: m.admit_ms_per_run):.3f} Redis ms/run"
        )
    admit = {
        backend: _ops_per_run([m for (b, _), g in cases.items() if b == backend for m in g], True)
        for backend in dict.fromkeys(b for b, _ in cases)
    }
    _print_ops("Redis commands per run, admission (calls/run and usec/call, masters):", admit)
    drain = {f"{b} x{r}": _ops_per_run(ms, False) for (b, r), ms in cases.items()}
    _print_ops("Redis commands per run, drain (calls/run and usec/call, masters):", drain)
