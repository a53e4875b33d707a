"""The cases `bench.bench_run_admission` times against a running `Stack`, and their summaries.

`measure` creates the tasks, starts the held run, warms up, then runs the cases (`CASES`) in
interleaved rounds (their order rotated each round), settling after each block and adding the
CPU time spent to the case; `task_statuses` counts the tasks by status afterwards. Each 202
case runs twice: on the gateway with durable accept (as the stack's Valkey allows it) and on
the one with RAGPOC_DURABLE_ACCEPT=0.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from bench.admission_stack import BenchError, Stack, cpu_snapshot, settle
from bench.timing import log, median_p99_ms
from tests.rawhttp import RawResponse, request

__all__ = ["CASES", "Case", "measure", "task_statuses"]

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
            if self.baseline is not None:
                base = cases[self.baseline]
                row["rate_ratio"] = row["requests_per_s"] / (len(base.latencies) / base.wall_s)
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
    url: str, bodies: list[dict[str, Any]], concurrency: int
) -> list[RawResponse]:
    """`concurrency` clients, each sending the next of `bodies` when its previous request was
    answered, until all were sent; one new connection per request."""
    tickets = iter(bodies)
    replies: list[RawResponse] = []

    async def client() -> None:
        for body in tickets:  # shared: each body is taken by exactly one client
            replies.append(await request("POST", url, body, limit_s=30))

    await asyncio.gather(*(client() for _ in range(min(concurrency, len(bodies)))))
    return replies


def run_concurrent(
    url: str, bodies: list[dict[str, Any]], concurrency: int, expect: int
) -> tuple[list[float], float]:
    started = time.perf_counter()
    replies = asyncio.run(closed_loop(url, bodies, concurrency))
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


# name -> the case its ratios are taken against
CASES = {
    "409 sequential": "baseline sequential",
    "202 sequential": "baseline durable seq",
    "202 seq, durable off": "baseline sequential",
    "baseline sequential": None,
    "201 sequential": "baseline durable seq",
    "baseline durable seq": None,
    "409 concurrent": "baseline concurrent",
    "202 concurrent": "baseline durable conc",
    "202 conc, durable off": "baseline concurrent",
    "baseline concurrent": None,
    "201 concurrent": "baseline durable conc",
    "baseline durable conc": None,
    "xadd direct": None,
    "xadd+waitaof direct": "xadd direct",
}
# The direct cases need AOF (WAITAOF refuses to run without it).
AOF_ONLY = ("xadd direct", "xadd+waitaof direct", "baseline durable seq", "baseline durable conc")


def xadd_direct(redis_url: str, stream: str, k: int, waitaof: bool) -> tuple[list[float], float]:
    """`k` sequential XADDs from this process, each followed by `WAITAOF 1 0` on its connection
    when `waitaof`: the bare cost of waiting for Valkey's fsync, with no HTTP around it."""
    latencies = []
    with redis.Redis.from_url(redis_url) as client:
        for _ in range(k):
            started = time.perf_counter()
            with client.pipeline(transaction=False) as pipe:
                pipe.xadd(stream, {"data": "x" * 200}, maxlen=10_000)
                if waitaof:
                    pipe.waitaof(1, 0, 5_000)
                replies = pipe.execute()
            latencies.append(time.perf_counter() - started)
            if waitaof and replies[1][0] != 1:
                raise BenchError(f"WAITAOF did not confirm the fsync: {replies[1]}")
    return latencies, sum(latencies)


def measure(stack: Stack, args: argparse.Namespace) -> dict[str, Case]:
    n, m, c, rounds = args.requests, args.concurrent_requests, args.concurrency, args.rounds
    durable = httpx.Client(base_url=stack.gateway_url, timeout=30, trust_env=False)
    plain = httpx.Client(base_url=stack.plain_gateway_url, timeout=30, trust_env=False)
    baseline = httpx.Client(base_url=stack.baseline_url, timeout=30, trust_env=False)
    try:
        groups = stack.pids()
        held, *fresh = create_tasks(stack.gateway_url, 1 + 10 + 2 * n + 2 * m)
        titles = ({"title": f"bench task {k}"} for k in itertools.count())
        holding = durable.post("/run-agents", json={"id": held, "hold_seconds": HOLD_SECONDS})
        if holding.status_code != 202:
            raise BenchError(f"could not start the held run: {holding.text}")
        wait_running(durable, held)
        log(f"{len(fresh) + 1} tasks created, held run started")
        refused_body = {"id": held}
        baseline_body = {"id": held}
        fresh_tasks = iter(fresh)

        def fresh_bodies(k: int) -> list[dict[str, Any]]:
            return [{"id": next(fresh_tasks)} for _ in range(k)]

        # warm-up: connections, Lua scripts, SQL pools, code paths, the durable-accept probe
        for client in (durable, plain):
            timed_sequential(client, "/run-agents", [refused_body] * WARMUP, 409)
            timed_sequential(client, "/run-agents", fresh_bodies(5), 202)
        timed_sequential(baseline, "/xadd", [baseline_body] * WARMUP, 202)
        if stack.appendfsync != "off":
            timed_sequential(baseline, "/xadd-durable", [baseline_body] * WARMUP, 202)
        run_concurrent(f"{stack.gateway_url}/run-agents", [refused_body] * 2 * c, c, 409)
        run_concurrent(f"{stack.baseline_url}/xadd", [baseline_body] * 2 * c, c, 202)

        names = [name for name in CASES if stack.appendfsync != "off" or name not in AOF_ONLY]
        cases = {name: Case(name, CASES[name], "conc" in name) for name in names}
        layers: Counter[str] = Counter()
        seq_sizes, conc_sizes = chunks(n, rounds), chunks(m, rounds)

        def refused_seq(k: int) -> tuple[list[float], float]:
            latencies, replies = timed_sequential(durable, "/run-agents", [refused_body] * k, 409)
            layers.update(r.json()["error"]["layer"] for r in replies)
            return latencies, sum(latencies)

        def accepted_seq(client: httpx.Client) -> Callable[[int], tuple[list[float], float]]:
            def run(k: int) -> tuple[list[float], float]:
                latencies, replies = timed_sequential(client, "/run-agents", fresh_bodies(k), 202)
                if any(r.json()["status"] != "queued" for r in replies):
                    raise BenchError("a 202 reply was not 'queued'")
                return latencies, sum(latencies)

            return run

        def baseline_seq(path: str) -> Callable[[int], tuple[list[float], float]]:
            def run(k: int) -> tuple[list[float], float]:
                latencies, _ = timed_sequential(baseline, path, [baseline_body] * k, 202)
                return latencies, sum(latencies)

            return run

        def new_titles(k: int) -> list[dict[str, Any]]:
            return [next(titles) for _ in range(k)]

        def created_seq(k: int) -> tuple[list[float], float]:
            latencies, _ = timed_sequential(durable, "/api/tasks", new_titles(k), 201)
            return latencies, sum(latencies)

        def concurrent(
            url: str, bodies: Callable[[int], list[dict[str, Any]]], expect: int
        ) -> Callable[[int], tuple[list[float], float]]:
            return lambda k: run_concurrent(url, bodies(k), c, expect)

        def same(body: dict[str, Any]) -> Callable[[int], list[dict[str, Any]]]:
            return lambda k: [body] * k

        run_agents, xadd = f"{stack.gateway_url}/run-agents", f"{stack.baseline_url}/xadd"
        plain_run_agents = f"{stack.plain_gateway_url}/run-agents"
        xadd_durable, tasks = f"{stack.baseline_url}/xadd-durable", f"{stack.gateway_url}/api/tasks"
        direct = f"{stack.namespace}:bench:direct"
        plan: list[tuple[str, Callable[[int], tuple[list[float], float]], list[int]]] = [
            ("409 sequential", refused_seq, seq_sizes),
            ("202 sequential", accepted_seq(durable), seq_sizes),
            ("202 seq, durable off", accepted_seq(plain), seq_sizes),
            ("baseline sequential", baseline_seq("/xadd"), seq_sizes),
            ("201 sequential", created_seq, seq_sizes),
            ("baseline durable seq", baseline_seq("/xadd-durable"), seq_sizes),
            ("409 concurrent", concurrent(run_agents, same(refused_body), 409), conc_sizes),
            ("202 concurrent", concurrent(run_agents, fresh_bodies, 202), conc_sizes),
            ("202 conc, durable off", concurrent(plain_run_agents, fresh_bodies, 202), conc_sizes),
            ("baseline concurrent", concurrent(xadd, same(baseline_body), 202), conc_sizes),
            ("201 concurrent", concurrent(tasks, new_titles, 201), conc_sizes),
            (
                "baseline durable conc",
                concurrent(xadd_durable, same(baseline_body), 202),
                conc_sizes,
            ),
            ("xadd direct", lambda k: xadd_direct(stack.redis_url, direct, k, False), seq_sizes),
            (
                "xadd+waitaof direct",
                lambda k: xadd_direct(stack.redis_url, direct, k, True),
                seq_sizes,
            ),
        ]
        plan = [step for step in plan if step[0] in cases]
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
        durable.close()
        plain.close()
        baseline.close()


def task_statuses(gateway_url: str) -> dict[str, int]:
    """How many tasks are in each status (the accepted runs finish in the background)."""
    counts: dict[str, int] = {}
    with httpx.Client(base_url=gateway_url, timeout=10, trust_env=False) as client:
        for status in ("queued", "running", "done", "failed"):
            reply = client.get("/api/tasks", params={"status": status, "limit": 1000})
            counts[status] = len(reply.json()["tasks"])
    return counts
