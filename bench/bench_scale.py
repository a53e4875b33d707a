"""Runs/s and Redis CPU per run with 1, 2 and 4 runner processes, on one Valkey and on a
Valkey Cluster (3 masters, 3 replicas).

For each backend and runner count, on fresh servers, a fresh namespace and a fresh SQLite file:
mockai (instant latency profile, so the runner and Redis path is what is timed), the ingestor,
the projector and one gateway start; `--runs` tasks are created and one run of each is queued
through the gateway's POST /run-agents (the real path: admission, durable accept) while no
runner runs. Then N runner processes start, and the drain is timed from the first run's
`run.started` to the last run's terminal event (their times as the read model records them).

Redis CPU is the user + system time of every server process (all six nodes on the cluster)
over the drain, divided by runs; the idle rate measured just before (cluster bus, replication
pings, blocked reads) is shown too. Per-operation counts come from INFO commandstats on every
master, before and after, divided by runs, for the admission and for the drain. Ratios are
against the 1-runner single-node case of the same invocation; `--rounds` repeats every case
(interleaved) and reports medians.

    python -m bench.bench_scale [--runs 400] [--rounds 1] [--runners 1 2 4] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx

from bench.admission_stack import BenchError, settle
from bench.scale_stack import BACKENDS, Servers, Services
from bench.scale_table import Measurement, print_report
from bench.timing import log
from libs.common.logging import configure_logging

__all__ = ["main", "measure"]

CLIENTS = 16
IDLE_WINDOW_S = 2.0
POLL_S = 0.05


def _diff(
    after: dict[str, tuple[int, int]], before: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """What the commands did between two INFO commandstats snapshots (unchanged ones left out)."""
    out = {}
    for name, (calls, usec) in after.items():
        was = before.get(name, (0, 0))
        if calls - was[0]:
            out[name] = (calls - was[0], usec - was[1])
    return out


async def _create_tasks(client: httpx.AsyncClient, runs: int) -> list[int]:
    """`runs` distinct tasks, CLIENTS requests at a time."""
    ids: list[int] = []
    numbers = iter(range(runs))

    async def creator() -> None:
        for n in numbers:
            reply = await client.post("/api/tasks", json={"title": f"Why is the sky blue? {n}"})
            if reply.status_code != 201:
                raise BenchError(f"task refused: {reply.status_code} {reply.text}")
            ids.append(int(reply.json()["id"]))

    await asyncio.gather(*(creator() for _ in range(CLIENTS)))
    return ids


async def _queue_runs(client: httpx.AsyncClient, ids: list[int]) -> None:
    """One run of each task through POST /run-agents, CLIENTS at a time: each 202 comes once
    the command is durable and the read model shows the run queued."""
    pending = iter(ids)

    async def caller() -> None:
        for task_id in pending:
            reply = await client.post("/run-agents", json={"id": task_id})
            if reply.status_code != 202:
                raise BenchError(f"run refused: {reply.status_code} {reply.text}")

    await asyncio.gather(*(caller() for _ in range(CLIENTS)))


def _ended(database: Path) -> tuple[int, int, float | None, float | None]:
    """Runs that ended (done or failed), how many failed, and the first start and last end."""
    with sqlite3.connect(database, timeout=5) as db:
        row = db.execute(
            "SELECT count(*), sum(status = 'failed'), min(started_at), max(finished_at)"
            " FROM runs WHERE status IN ('done', 'failed')"
        ).fetchone()
    return int(row[0]), int(row[1] or 0), row[2], row[3]


def _groups(services: Services) -> dict[str, list[int]]:
    """The processes `settle` watches: a phase is over once Redis and every service are idle,
    so the work one phase leaves behind is counted to it, not to the next."""
    return {"redis": services.servers.pids, "services": services.pids()}


def measure(
    backend: str, runners: int, runs: int, concurrency: int, timeout_s: float
) -> Measurement:
    """One case on fresh servers and services; stops everything it started."""
    with tempfile.TemporaryDirectory(prefix="ragpoc-scale-") as tmp:
        servers = Servers(backend, Path(tmp))
        services = Services(Path(tmp), servers, runner_concurrency=concurrency)
        try:
            servers.start()
            services.start()
            log(f"{backend}: servers and services up")
            return _measure(services, runners, runs, timeout_s)
        except BenchError:
            log(services.tail())
            raise
        finally:
            services.stop()
            servers.stop()


def _measure(services: Services, runners: int, runs: int, timeout_s: float) -> Measurement:
    servers = services.servers

    async def admit() -> tuple[float, dict[str, tuple[int, int]]]:
        async with httpx.AsyncClient(
            base_url=services.gateway_url, timeout=60, trust_env=False
        ) as client:
            ids = await _create_tasks(client, runs)
            log(f"{servers.backend}: {runs} tasks created")
            settle(_groups(services))
            cpu, ops = services.cpu_seconds()["redis"], servers.command_stats()
            await _queue_runs(client, ids)
        log(f"{servers.backend}: {runs} runs queued")
        settle(_groups(services))
        return services.cpu_seconds()["redis"] - cpu, _diff(servers.command_stats(), ops)

    admit_cpu, ops_admit = asyncio.run(admit())
    idle_before = services.cpu_seconds()["redis"]
    time.sleep(IDLE_WINDOW_S)
    idle_rate = (services.cpu_seconds()["redis"] - idle_before) / IDLE_WINDOW_S

    before, ops_before = services.cpu_seconds(), servers.command_stats()
    services.start_runners(runners)
    deadline = time.monotonic() + timeout_s
    while True:
        ended, failed, first, last = _ended(services.database)
        if ended >= runs:
            break
        services.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"only {ended} of {runs} runs ended within {timeout_s:.0f} s")
        time.sleep(POLL_S)
    after, ops_after = services.cpu_seconds(), servers.command_stats()
    if failed:
        raise BenchError(f"{failed} of {runs} runs failed")
    if first is None or last is None:
        raise BenchError("the read model has no start or end time for the runs")
    return Measurement(
        backend=servers.backend,
        runners=runners,
        runs=runs,
        seconds=last - first,
        redis_cpu_s=after["redis"] - before["redis"],
        idle_redis_cpu_per_s=idle_rate,
        app_cpu_s=(after["runners"] + after["others"]) - (before["runners"] + before["others"]),
        admit_redis_cpu_s=admit_cpu,
        ops_admit=ops_admit,
        ops_drain=_diff(ops_after, ops_before),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=400, help="runs queued per case (400)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; medians are reported")
    parser.add_argument(
        "--runners", type=int, nargs="+", default=[1, 2, 4], help="runner processes (1 2 4)"
    )
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), help="(both)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="RAGPOC_RUNNER_CONCURRENCY of each runner"
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds a drain may take")
    parser.add_argument("--quick", action="store_true", help="100 runs, one round")
    args = parser.parse_args()
    configure_logging("warning")  # the cluster's own lines go to stderr, the tables to stdout
    if args.quick:
        args.runs, args.rounds = 100, 1
    results: list[Measurement] = []
    for round_number in range(1, args.rounds + 1):  # interleaved: noise hits every case alike
        for backend in args.backends:
            for runners in args.runners:
                m = measure(backend, runners, args.runs, args.concurrency, args.timeout)
                results.append(m)
                log(
                    f"round {round_number}: {backend} x{runners}: {m.rate:.1f} runs/s, "
                    f"Redis {m.redis_cpu_s / m.runs * 1000:.2f} ms/run"
                )
    print_report(results, args.concurrency, args.rounds)


if __name__ == "__main__":
    main()
