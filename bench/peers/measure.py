"""What `bench.bench_vs_celery` measures on one system, through its HTTP API only, so the same
code measures rag-poc's gateway and the Celery seed peer: admission latency (202 and 409), runs
per second draining queued runs, POST to first token and to completion at an SSE client, and
the resident memory of its processes. Every measurement checks that each run it started
completed, so a broken system cannot look fast."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import httpx

from bench.admission_cases import create_tasks, run_concurrent
from bench.admission_stack import cpu_snapshot
from bench.bench_runner_concurrency import drain
from tests.sse_client import sse_frames

__all__ = [
    "admission",
    "count_done",
    "cpu_seconds",
    "first_token_and_completion",
    "rss_mb",
    "throughput",
]

ENDS = ("run.completed", "run.failed")
RUN_LIMIT_S = 300.0
HOLD_S = 15.0  # longer than the 409 case takes; short, as stopping a stack waits for it


def count_done(base_url: str) -> int:
    reply = httpx.get(f"{base_url}/api/tasks", params={"limit": 1000}, trust_env=False)
    return sum(task["status"] == "done" for task in reply.json()["tasks"])


def throughput(base_url: str, runs: int) -> float:
    """Runs/s draining `runs` runs queued by 16 clients, on a system with no task yet."""
    rate = runs / asyncio.run(drain(base_url, runs))
    if (done := count_done(base_url)) != runs:
        raise RuntimeError(f"{base_url}: {done} tasks done after {runs} runs")
    return rate


def first_token_and_completion(
    base_url: str, clients: int, runs: int
) -> tuple[list[float], list[float]]:
    """Seconds from POST /run-agents to the first `llm.delta` and to `run.completed` seen by
    an SSE client subscribed before the POST, for `runs` runs, `clients` at a time."""
    ids = create_tasks(base_url, runs)
    return asyncio.run(_timed_runs(base_url, clients, ids))


async def _timed_runs(
    base_url: str, clients: int, ids: list[int]
) -> tuple[list[float], list[float]]:
    firsts: list[float] = []
    ends: list[float] = []
    gate = asyncio.Semaphore(clients)
    # No keep-alive: a pooled connection idle while slow runs stream can be closed by the
    # server (its keep-alive timeout) just as a POST reuses it, a spurious ReadError.
    limits = httpx.Limits(max_connections=4 * clients, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=RUN_LIMIT_S, limits=limits, trust_env=False
    ) as client:

        async def one(task_id: int) -> None:
            marks: dict[str, float] = {}
            last: list[str] = []

            def observe(frame: dict[str, str]) -> bool:
                now = time.perf_counter()
                if frame["event"] == "llm.delta":
                    marks.setdefault("first", now)
                last[:] = [frame["event"]]
                return frame["event"] in ENDS

            async with gate:
                connected = asyncio.Event()
                url = f"/events/tasks/{task_id}"
                reader = asyncio.create_task(
                    sse_frames(client, url, until=observe, connected=connected)
                )
                await asyncio.wait_for(connected.wait(), RUN_LIMIT_S)
                posted = time.perf_counter()
                reply = await client.post("/run-agents", json={"id": task_id})
                if reply.status_code != 202:
                    raise RuntimeError(f"run of {task_id} refused: {reply.status_code}")
                await asyncio.wait_for(reader, RUN_LIMIT_S)
                if last != ["run.completed"] or "first" not in marks:
                    raise RuntimeError(f"run of {task_id} ended with {last}, marks {marks}")
                firsts.append(marks["first"] - posted)
                ends.append(time.perf_counter() - posted)

        await asyncio.gather(*(one(task_id) for task_id in ids))
    return firsts, ends


def admission(base_url: str, clients: int, count: int) -> tuple[list[float], list[float]]:
    """Latencies of `count` accepted (202, each a fresh task) and `count` refused (409, a task
    whose run is held) POST /run-agents, `clients` at a time, one connection per request."""
    held, *fresh = create_tasks(base_url, 1 + count)
    holding = httpx.post(
        f"{base_url}/run-agents", json={"id": held, "hold_seconds": HOLD_S}, trust_env=False
    )
    if holding.status_code != 202:
        raise RuntimeError(f"could not start the held run: {holding.status_code} {holding.text}")
    url = f"{base_url}/run-agents"
    run_concurrent(url, [{"id": held}] * 2 * clients, clients, 409)  # warm-up
    accepted, _ = run_concurrent(url, [{"id": task_id} for task_id in fresh], clients, 202)
    refused, _ = run_concurrent(url, [{"id": held}] * count, clients, 409)
    return accepted, refused


def cpu_seconds(pids: dict[int, str]) -> dict[str, float]:
    """CPU seconds (user + system) each process role has used so far."""
    groups: dict[str, list[int]] = defaultdict(list)
    for pid, role in pids.items():
        groups[role].append(pid)
    spent = cpu_snapshot(groups)
    del spent["client"]  # this process: not the system's
    return spent


def rss_mb(pids: dict[int, str]) -> dict[str, float]:
    """Resident memory (MiB) by role, summed over the processes of that role."""
    by_role: dict[str, float] = defaultdict(float)
    for pid, role in pids.items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kib = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
        by_role[role] += kib / 1024
    return dict(by_role)
