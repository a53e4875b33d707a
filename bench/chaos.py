"""`make chaos`: a long fault run against the stack of `ragpoc up` (plus a second runner and
gateway, on PostgreSQL, behind a proxy to Valkey), then the table of what was injected and what
the history checker found. Exits 1 when a promise was broken.

    python -m bench.chaos --minutes 10 [--seed N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.faults.chaos import ChaosResult, chaos_run
from tests.faults.nemesis import FAULT_KINDS

__all__ = ["main", "render"]


def render(result: ChaosResult) -> str:
    counts = {kind: 0 for kind in FAULT_KINDS}
    for fault in result.faults:
        counts[fault.kind] += 1
    lines = [
        f"fault run: {result.seconds / 60:.1f} min, {len(result.faults)} faults",
        "",
        f"{'fault':<14}{'injected':>10}{'max recovery s':>16}",
    ]
    for kind, count in counts.items():
        recovery = result.recover_s.get(kind)
        shown = f"{recovery:.1f}" if recovery is not None else "-"
        lines.append(f"{kind:<14}{count:>10}{shown:>16}")
    verdict, requests = result.verdict, result.history.requests
    outcomes: dict[str, int] = {}
    for request in requests:
        outcomes[request.outcome] = outcomes.get(request.outcome, 0) + 1
    follows = [f for f in result.history.follows if f.ids]
    reconnects = sum(max(f.connects - 1, 0) for f in follows)
    ended = ", ".join(f"{k.removeprefix('run.')} {n}" for k, n in sorted(verdict.outcomes.items()))
    lines += [
        "",
        f"requests sent by clients      {len(requests)}  "
        + ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())),
        f"runs accepted (202 to a client) {verdict.accepted}",
        f"runs in the log               {verdict.requested}  ({ended})",
        f"lost                          {len(verdict.lost)}",
        f"executed twice (overlapping)  {len(verdict.overlapping)}",
        f"ended twice                   {len(verdict.ended_twice)}",
        f"stale writes                  {len(verdict.stale_writes)}",
        f"one key, two runs             {len(verdict.key_conflicts)}",
        f"SSE followers / reconnects    {len(follows)} / {reconnects}, "
        f"with gaps {len(verdict.sse_problems)}",
        f"poison dead-lettered after K  {'yes' if not verdict.poison_problems else 'NO'}",
        f"ingests accepted / lost       {len(result.history.ingests)} / "
        f"{len(verdict.ingests_lost)}",
        f"read models == rebuild        {'yes' if not result.rebuild_differs else 'NO'}",
        f"serving after the faults      {'yes' if not result.serving_after else 'NO'}",
    ]
    for name, items in result.problems.items():
        lines.append(f"\nPROBLEM {name} ({len(items)}):")
        lines += [f"  {item}" for item in items[:20]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long faults go on")
    parser.add_argument("--seed", type=int, default=None, help="the nemesis' random seed")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run's logs here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    print(f"seed {seed} (same seed, same faults in the same order)", flush=True)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        root = args.keep
    else:
        root = Path(tempfile.mkdtemp(prefix="ragpoc-chaos-"))
    os.environ.setdefault("RAGPOC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    result = asyncio.run(chaos_run(root, duration_s=args.minutes * 60, seed=seed))
    print(render(result))
    print(f"\nlogs: {root}")
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
