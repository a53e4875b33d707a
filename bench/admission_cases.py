"""The cases `bench.bench_run_admission` times against a running `Stack`, and their summaries.

`measure` creates the tasks, starts the held run, warms up, then runs the five cases in
interleaved rounds (their order rotated each round), settling after each block and adding the
CPU time spent to the case; `task_statuses` counts the tasks by status afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.admission_stack import BenchError, Stack, cpu_snapshot, settle
from bench.timing import log, median_p99_ms
from tests.rawhttp import RawResponse, request

__all__ = ["Case", "measure", "task_statuses"]

HOLD_SECONDS = 600.0
WARMUP = 20


@dataclass
class Case:
    """One measured case: its latencies (seconds) and CPU seconds by process group."""

    name: str
    baseline: str | None
    concurrent: bool
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: Counter[str] = field(default_factory=Counter)

    def summary(self, cases: dict[str, Case]) -> dict[str, Any]:
        n = len(self.latencies)
        median, p99 = median_p99_ms(self.latencies)
        row: dict[str, Any] = {"case": self.name, "n": n, "median_ms": median, "p99_ms": p99}
        if self.baseline is not None:
            base_median, base_p99 = median_p99_ms(cases[self.baseline].latencies)
            row["median_ratio"] = median / base_median
            row["p99_ratio"] = p99 / base_p99
        if self.concurrent:
            row["requests_per_s"] = n / self.wall_s
        row["cpu_ms_per_request"] = {k: v * 1000 / n for k, v in sorted(self.cpu_s.items())}
        return row


def timed_sequential(
    client: httpx.Client, path: str, bodies: list[dict[str, Any]], expect: int
) -> tuple[list[float], list[httpx.Response]]:
    latencies, replies = [], []
    for body in bodies:
        started = time.perf_counter()
        reply = client.post(path, json=body)
        latencies.append(time.perf_counter() - started)
        if reply.status_code != expect:
            raise BenchError(f"POST {path} {body}: expected {expect}, got {reply.text}")
        replies.append(reply)
    return latencies, replies


async def closed_loop(
    url: str, body: dict[str, Any], total: int, concurrency: int
) -> list[RawResponse]:
    """`concurrency` clients, each sending its next request when the previous one answered,
    until `total` requests were sent; one new connection per request."""
    tickets = iter(range(total))
    replies: list[RawResponse] = []

    async def client() -> None:
        for _ in tickets:  # shared: each ticket is taken by exactly one client
            replies.append(await request("POST", url, body, limit_s=30))

    await asyncio.gather(*(client() for _ in range(min(concurrency, total))))
    return replies


def run_concurrent(
    url: str, body: dict[str, Any], total: int, concurrency: int, expect: int
) -> tuple[list[float], float]:
    started = time.perf_counter()
    replies = asyncio.run(closed_loop(url, body, total, concurrency))
    wall = time.perf_counter() - started
    wrong = Counter(r.status for r in replies if r.status != expect)
    if wrong:
        raise BenchError(f"POST {url}: expected {expect} only, also got {dict(wrong)}")
    return [r.seconds for r in replies], wall


def chunks(total: int, parts: int) -> list[int]:
    """`total` split into `parts` sizes differing by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def create_tasks(gateway: str, count: int) -> list[int]:
    """Create `count` tasks, 50 at a time (each create waits for its projection)."""

    async def create_all() -> list[int]:
        ids: list[int] = []
        for offset in range(0, count, 50):
            batch = range(offset, min(offset + 50, count))
            replies = await asyncio.gather(
                *(request("POST", f"{gateway}/api/tasks", {"title": f"bench {n}"}) for n in batch)
            )
            for reply in replies:
                if reply.status != 201:
                    raise BenchError(f"POST /api/tasks: {reply.status} {reply.body!r}")
                ids.append(int(reply.json()["id"]))
        return ids

    return asyncio.run(create_all())


def wait_running(client: httpx.Client, task_id: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get(f"/api/tasks/{task_id}").json()["status"] == "running":
            return
        time.sleep(0.05)
    raise BenchError(f"the held run on task {task_id} did not start within {timeout_s} s")


def measure(stack: Stack, args: argparse.Namespace) -> dict[str, Case]:
    n, m, c, rounds = args.requests, args.concurrent_requests, args.concurrency, args.rounds
    gateway = httpx.Client(base_url=stack.gateway_url, timeout=30, trust_env=False)
    baseline = httpx.Client(base_url=stack.baseline_url, timeout=30, trust_env=False)
    try:
        groups = stack.pids()
        held, *fresh = create_tasks(stack.gateway_url, 1 + 5 + n)
        holding = gateway.post("/run-agents", json={"id": held, "hold_seconds": HOLD_SECONDS})
        if holding.status_code != 202:
            raise BenchError(f"could not start the held run: {holding.text}")
        wait_running(gateway, held)
        log(f"{len(fresh) + 1} tasks created, held run started")
        refused_body = {"id": held}
        baseline_body = {"id": held}
        warm, fresh = fresh[:5], fresh[5:]

        # warm-up: connections, Lua scripts, SQL pools, code paths
        timed_sequential(gateway, "/run-agents", [refused_body] * WARMUP, 409)
        timed_sequential(gateway, "/run-agents", [{"id": t} for t in warm], 202)
        timed_sequential(baseline, "/xadd", [baseline_body] * WARMUP, 202)
        run_concurrent(f"{stack.gateway_url}/run-agents", refused_body, 2 * c, c, 409)
        run_concurrent(f"{stack.baseline_url}/xadd", baseline_body, 2 * c, c, 202)

        cases = {
            "409 sequential": Case("409 sequential", "baseline sequential", False),
            "202 sequential": Case("202 sequential", "baseline sequential", False),
            "baseline sequential": Case("baseline sequential", None, False),
            "409 concurrent": Case("409 concurrent", "baseline concurrent", True),
            "baseline concurrent": Case("baseline concurrent", None, True),
        }
        layers: Counter[str] = Counter()
        accepted = iter(fresh)
        seq_sizes, conc_sizes = chunks(n, rounds), chunks(m, rounds)

        def refused_seq(k: int) -> tuple[list[float], float]:
            latencies, replies = timed_sequential(gateway, "/run-agents", [refused_body] * k, 409)
            layers.update(r.json()["error"]["layer"] for r in replies)
            return latencies, sum(latencies)

        def accepted_seq(k: int) -> tuple[list[float], float]:
            bodies = [{"id": next(accepted)} for _ in range(k)]
            latencies, replies = timed_sequential(gateway, "/run-agents", bodies, 202)
            if any(r.json()["status"] != "queued" for r in replies):
                raise BenchError("a 202 reply was not 'queued'")
            return latencies, sum(latencies)

        def baseline_seq(k: int) -> tuple[list[float], float]:
            latencies, _ = timed_sequential(baseline, "/xadd", [baseline_body] * k, 202)
            return latencies, sum(latencies)

        def refused_conc(k: int) -> tuple[list[float], float]:
            return run_concurrent(f"{stack.gateway_url}/run-agents", refused_body, k, c, 409)

        def baseline_conc(k: int) -> tuple[list[float], float]:
            return run_concurrent(f"{stack.baseline_url}/xadd", baseline_body, k, c, 202)

        plan: list[tuple[str, Callable[[int], tuple[list[float], float]], list[int]]] = [
            ("409 sequential", refused_seq, seq_sizes),
            ("202 sequential", accepted_seq, seq_sizes),
            ("baseline sequential", baseline_seq, seq_sizes),
            ("409 concurrent", refused_conc, conc_sizes),
            ("baseline concurrent", baseline_conc, conc_sizes),
        ]
        settled_s = settle(groups)
        log(f"warmed up; settled in {settled_s:.1f} s")
        for r in range(rounds):
            for name, run, sizes in plan[r % len(plan) :] + plan[: r % len(plan)]:
                if sizes[r] == 0:
                    continue
                before = cpu_snapshot(groups)
                latencies, wall = run(sizes[r])
                settled_s += settle(groups)
                after = cpu_snapshot(groups)
                case = cases[name]
                case.latencies += latencies
                case.wall_s += wall
                case.cpu_s.update({k: after[k] - before[k] for k in after})
            stack.check_alive()
            log(f"round {r + 1}/{rounds} done")
        log(f"waited {settled_s:.1f} s in total for the services to go idle between cases")
        if set(layers) != {"precheck"}:
            print(f"note: 409s by layer: {dict(layers)}", file=sys.stderr)
        return cases
    finally:
        gateway.close()
        baseline.close()


def task_statuses(gateway_url: str) -> dict[str, int]:
    """How many tasks are in each status (the accepted runs finish in the background)."""
    counts: dict[str, int] = {}
    with httpx.Client(base_url=gateway_url, timeout=10, trust_env=False) as client:
        for status in ("queued", "running", "done", "failed"):
            reply = client.get("/api/tasks", params={"status": status, "limit": 1000})
            counts[status] = len(reply.json()["tasks"])
    return counts
