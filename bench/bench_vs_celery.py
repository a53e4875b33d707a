"""rag-poc against its original ("seed") design, a Starlette app feeding a Celery worker
(`bench.peers.celery_seed`), in one run on this machine, under mockai's `hosted-small` latency
profile (400 ms to the first token, 80 tokens/s, 30 ms per embedding).

What each side gets: rag-poc is `ragpoc up` (one gateway, one runner process with its default
RAGPOC_RUNNER_CONCURRENCY of 32 runs at once, one projector, its own Valkey); the seed peer is
one uvicorn process, one Celery worker (prefork with `--prefork` pool processes, or one process
with `--threads` threads or `--gevent` greenlets) and its own Valkey. Both share the one mockai
and the one ingestor (`POST /search` embeds through mockai and searches Qdrant), so both do the
same retrieval and model work.

Measured on each, per round (medians over `--rounds` rounds; the drain of queued runs uses
16 clients, `--clients` sets the others):
- admission: POST /run-agents answered 202 (a fresh task) and 409 (a task whose run is held),
  `--clients` at a time, median and p99;
- runs/s: `--runs` runs queued at once, from the first POST until every task is done (prefork:
  `--serial-runs` per pool process, as its runs go one at a time per process);
- POST to first token seen by an SSE client (median) and to completion (median, p99), for
  `--latency-runs` runs, `--clients` at a time;
- CPU time per drained run (task creation and status polling included) and resident memory
  after the drain, by process role; each side's totals leave out the shared mockai and
  ingestor (rag-poc's include its `ragpoc up` supervisor).
Every phase checks that each run it started completed ("done"), so a broken side cannot look
fast. Ratios are rag-poc / Celery; "paired by round" is the median of each round's own runs/s
ratio, which cancels the drift of a machine shared with other work.

    python -m bench.bench_vs_celery [--runs 300] [--rounds 3] [--clients 16] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench.peers.celery_seed.stack import SeedPool, SeedStack, seed_up
from bench.peers.measure import (
    admission,
    cpu_seconds,
    first_token_and_completion,
    rss_mb,
    throughput,
)
from bench.timing import log, median_p99_ms
from tests.conftest import free_port
from tests.stackproc import children, ragpoc_up

RAGPOC = "rag-poc 1 runner"
SHARED_ROLES = ("mockai", "ingestor")  # serve both sides: listed apart, in neither total


@dataclass
class Round:
    """One system's figures in one round (seconds; MiB by process role)."""

    runs_per_s: float
    accepted: list[float]
    refused: list[float]
    first_token: list[float]
    completion: list[float]
    rss: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_run: dict[str, float] = field(default_factory=dict)  # the drain's, by role


def measure(
    label: str,
    base_url: str,
    runs: int,
    args: argparse.Namespace,
    pids: Callable[[], dict[int, str]],
) -> Round:
    """The phases on a system with no task yet; admission last, as it leaves a held run."""
    before = cpu_seconds(pids())
    rate = throughput(base_url, runs)
    after = cpu_seconds(pids())
    cpu = {role: (after[role] - before.get(role, 0.0)) * 1000 / runs for role in after}
    rss = rss_mb(pids())
    log(f"{label}: {runs} runs, {rate:.2f} runs/s")
    firsts, ends = first_token_and_completion(base_url, args.clients, args.latency_runs)
    log(f"{label}: {len(ends)} timed runs completed")
    accepted, refused = admission(base_url, args.clients, args.admissions)
    log(f"{label}: {len(accepted)} accepted, {len(refused)} refused")
    return Round(rate, accepted, refused, firsts, ends, rss, cpu)


def ragpoc_pids(supervisor: int) -> dict[int, str]:
    return {supervisor: "ragpoc up"} | children(supervisor)


def peer_pids(peer: SeedStack, supervisor: int) -> dict[int, str]:
    """The peer's processes and the mockai and ingestor it shares with rag-poc."""
    shared = {pid: role for pid, role in children(supervisor).items() if role in SHARED_ROLES}
    return peer.pids() | shared


def one_round(pools: list[SeedPool], args: argparse.Namespace) -> dict[str, Round]:
    """Every system once: the peers first, on rag-poc's mockai and ingestor, then rag-poc
    (its admission leaves runs behind that only its own stop ends)."""
    results: dict[str, Round] = {}
    mockai, ingestor = free_port(), free_port()
    env = {
        "MOCKAI_PROFILE": "hosted-small",
        "MOCKAI_PORT": str(mockai),
        "INGESTOR_PORT": str(ingestor),
        "RAGPOC_LOG_LEVEL": "warning",
        "RAGPOC_DEV": "1",  # accepts `hold_seconds`, for the 409 case
    }
    with (
        tempfile.TemporaryDirectory(prefix="ragpoc-vs-celery-") as tmp,
        ragpoc_up(Path(tmp) / "ragpoc", env) as up,
    ):
        for pool in pools:
            runs = args.serial_runs * pool.concurrency if pool.kind == "prefork" else args.runs
            with seed_up(
                Path(tmp) / pool.label.replace(" ", "-"),
                pool,
                ingestor_url=f"http://127.0.0.1:{ingestor}",
                openai_base_url=f"http://127.0.0.1:{mockai}/v1",
            ) as peer:
                pids = partial(peer_pids, peer, up.process.pid)
                results[pool.label] = measure(pool.label, peer.base_url, runs, args, pids)
                peer.check_alive()
        results[RAGPOC] = measure(
            RAGPOC, up.base_url, args.runs, args, lambda: ragpoc_pids(up.process.pid)
        )
    return results


def summarize(rounds: list[Round]) -> dict[str, float]:
    """Each figure's median over the rounds (latencies in ms)."""
    per_round: dict[str, list[float]] = defaultdict(list)
    for r in rounds:
        per_round["runs/s"].append(r.runs_per_s)
        for name, values in (("202", r.accepted), ("409", r.refused)):
            median, p99 = median_p99_ms(values)
            per_round[f"{name} median ms"].append(median)
            per_round[f"{name} p99 ms"].append(p99)
        per_round["first token median ms"].append(median_p99_ms(r.first_token)[0])
        median, p99 = median_p99_ms(r.completion)
        per_round["completion median ms"].append(median)
        per_round["completion p99 ms"].append(p99)
        own = {role: mib for role, mib in r.rss.items() if role not in SHARED_ROLES}
        per_round["RSS total MiB"].append(sum(own.values()))
        own = {role: ms for role, ms in r.cpu_ms_per_run.items() if role not in SHARED_ROLES}
        per_round["CPU ms/run, own"].append(sum(own.values()))
        shared = [ms for role, ms in r.cpu_ms_per_run.items() if role in SHARED_ROLES]
        per_round["CPU ms/run, shared"].append(sum(shared))
    return {name: statistics.median(values) for name, values in per_round.items()}


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def print_tables(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    summaries = {name: summarize(rounds) for name, rounds in results.items()}
    names = [RAGPOC, *(n for n in results if n != RAGPOC)]
    metrics = list(summaries[RAGPOC])
    width = max(len(n) for n in names) + 2
    print(
        f"\nmockai hosted-small; {args.rounds} round(s), medians of rounds; {args.clients} "
        f"clients; {args.runs} runs per drain (prefork: {args.serial_runs} per process); "
        f"{args.latency_runs} timed runs; {args.admissions} admissions of each kind"
    )
    print(f"{'':<24}" + "".join(f"{n:>{width}}" for n in names))
    for metric in metrics:
        print(f"{metric:<24}" + "".join(f"{summaries[n][metric]:>{width}.2f}" for n in names))
    print("\nratio rag-poc / Celery (runs/s: higher is better; ms and MiB: lower is better)")
    peers = names[1:]
    print(f"{'':<24}" + "".join(f"{n:>{width}}" for n in peers))
    for metric in metrics:
        ratios = [ratio(summaries[RAGPOC][metric], summaries[n][metric]) for n in peers]
        print(f"{metric:<24}" + "".join(f"{r:>{width}}" for r in ratios))
    paired = [
        statistics.median(
            ours.runs_per_s / theirs.runs_per_s
            for ours, theirs in zip(results[RAGPOC], results[n], strict=True)
        )
        for n in peers
    ]  # each round's systems ran minutes apart: a round's ratio cancels the machine's drift
    print(f"{'runs/s, paired by round':<24}" + "".join(f"{r:>{width - 1}.2f}x" for r in paired))
    print("\nruns/s in each round")
    for number in range(len(results[RAGPOC])):
        rates = "".join(f"{results[n][number].runs_per_s:>{width}.2f}" for n in names)
        print(f"{f'round {number + 1}':<24}{rates}")
    print("\nby process role, last round (mockai and ingestor serve both sides: in no total)")
    for name in names:
        last = results[name][-1]
        parts = ", ".join(f"{role} {mib:.0f}" for role, mib in sorted(last.rss.items()))
        print(f"  {name}: RSS MiB: {parts}")
        parts = ", ".join(f"{role} {ms:.1f}" for role, ms in sorted(last.cpu_ms_per_run.items()))
        print(f"  {' ' * len(name)}  CPU ms per drained run (task creation included): {parts}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=300, help="queued runs per drain")
    parser.add_argument("--serial-runs", type=int, default=30, help="per prefork process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--latency-runs", type=int, default=32)
    parser.add_argument("--admissions", type=int, default=160, help="202s and 409s per round")
    parser.add_argument("--prefork", type=int, nargs="*", default=[1], help="pool processes")
    parser.add_argument("--threads", type=int, default=32, help="threads pool size (0: skip)")
    parser.add_argument("--gevent", type=int, default=32, help="gevent pool size (0: skip)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.serial_runs, args.rounds = 64, 8, 1
        args.latency_runs, args.admissions = 16, 48
    return args


def main() -> None:
    args = parse_args()
    pools = [SeedPool("prefork", n) for n in args.prefork]
    pools += [SeedPool(kind, n) for kind, n in (("threads", args.threads), ("gevent", args.gevent))]
    pools = [pool for pool in pools if pool.concurrency > 0]
    log(f"{os.cpu_count()} CPUs; systems: {RAGPOC}, " + ", ".join(p.label for p in pools))
    results: dict[str, list[Round]] = defaultdict(list)
    for number in range(args.rounds):
        for name, figures in one_round(pools, args).items():
            results[name].append(figures)
        log(f"round {number + 1} of {args.rounds} done")
    print_tables(results, args)


if __name__ == "__main__":
    main()
