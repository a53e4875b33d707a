"""Runs per second through one runner process, one run at a time against many at once.

Starts `ragpoc up` (one runner process) with mockai's `hosted-small` latency profile (400 ms
to the first token, 80 tokens/s, 30 ms per embedding), once per concurrency asked for, creates
as many tasks as runs, asks for one run of each (16 clients at once) and times from the first
POST until every task is done. Prints runs/s per concurrency, the median of `--rounds` rounds,
and the ratio to the first concurrency listed (the baseline, measured in the same run).

    python -m bench.bench_runner_concurrency [--concurrency 1 32] [--runs 120] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.stackproc import ragpoc_up

CLIENTS = 16


async def drain(base_url: str, runs: int) -> float:
    """Seconds from the first POST /run-agents until `runs` tasks are done."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        ids = []
        for n in range(runs):
            reply = await client.post("/api/tasks", json={"title": f"Why is the sky blue? {n}"})
            ids.append(int(reply.json()["id"]))
        queue: asyncio.Queue[int] = asyncio.Queue()
        for task_id in ids:
            queue.put_nowait(task_id)

        async def caller() -> None:
            while not queue.empty():
                reply = await client.post("/run-agents", json={"id": queue.get_nowait()})
                if reply.status_code != 202:
                    raise RuntimeError(f"run refused: {reply.status_code} {reply.text}")

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CLIENTS)))
        while True:
            tasks = (await client.get("/api/tasks", params={"limit": 1000})).json()["tasks"]
            ended = [t for t in tasks if t["status"] in ("done", "failed")]
            if len(ended) >= runs:
                failed = [t for t in ended if t["status"] == "failed"]
                if failed:
                    raise RuntimeError(f"{len(failed)} runs failed")
                return time.perf_counter() - started
            await asyncio.sleep(0.05)


def measure(concurrency: int, runs: int) -> float:
    """Runs/s of one fresh stack with that runner concurrency."""
    env = {
        "MOCKAI_PROFILE": "hosted-small",
        "RAGPOC_RUNNER_CONCURRENCY": str(concurrency),
        "RAGPOC_LOG_LEVEL": "warning",
    }
    with (
        tempfile.TemporaryDirectory(prefix="ragpoc-bench-") as data,
        ragpoc_up(Path(data), env) as up,
    ):
        return runs / asyncio.run(drain(up.base_url, runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=120, help="runs per round (concurrency > 1)")
    parser.add_argument("--serial-runs", type=int, default=20, help="runs per round at 1")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[int, list[float]] = {c: [] for c in args.concurrency}
    for round_number in range(args.rounds):  # interleaved: noise hits every setting alike
        for concurrency in args.concurrency:
            runs = args.serial_runs if concurrency == 1 else args.runs
            rate = measure(concurrency, runs)
            results[concurrency].append(rate)
            print(f"round {round_number + 1}: concurrency {concurrency:>3}: {rate:6.2f} runs/s")
    baseline = statistics.median(results[args.concurrency[0]])
    print(f"\nmockai profile hosted-small, one runner process, {CLIENTS} clients")
    print(f"{'concurrency':>12} {'runs/s (median)':>16} {'vs baseline':>12}")
    for concurrency, rates in results.items():
        median = statistics.median(rates)
        print(f"{concurrency:>12} {median:>16.2f} {median / baseline:>11.1f}x")


if __name__ == "__main__":
    main()
