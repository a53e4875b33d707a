"""Rebuild speed: events per second that `ragpoc rebuild` folds from the archive into the read
models, against the live projector's writer applying the same events in the first place (the
baseline, same run, same database).

    .venv/bin/python -m bench.bench_rebuild [--tasks 500] [--database-url URL]

It writes a synthetic workload (per task: created, lock acquired, run requested, started,
retrieval, 12 token deltas, completed, lock released = 19 events) into a fresh SQLite database
(or the one given), then rebuilds it and checks the rows are identical.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from libs.common.database import create_engine, create_schema
from libs.events import (
    AnyEvent,
    LlmDelta,
    LockAcquired,
    LockReleased,
    RetrievalDone,
    RunCompleted,
    RunRequested,
    RunStarted,
    StoredEvent,
    TaskCreated,
)
from libs.readmodels import apply_batch
from libs.readmodels.rebuild import rebuild_from_archive
from tests.integration.test_rebuild import snapshot

PARTITIONS = 16


def workload(tasks: int) -> dict[int, list[StoredEvent]]:
    by_partition: dict[int, list[StoredEvent]] = {p: [] for p in range(PARTITIONS)}
    clock = 1_700_000_000_000
    for task_id in range(1, tasks + 1):
        run = f"run{task_id:06d}"
        ids = {"task_id": task_id, "run_id": run, "fence": 1}
        events: list[AnyEvent] = [
            TaskCreated(task_id=task_id, title=f"task {task_id}", at=1.0),
            LockAcquired(**ids, ttl_ms=30_000, by="gateway", at=2.0),  # type: ignore[arg-type]
            RunRequested(**ids, query="why is the sky blue", at=2.0),  # type: ignore[arg-type]
            RunStarted(**ids, worker="w", at=3.0),  # type: ignore[arg-type]
            RetrievalDone(**ids, query="q", at=3.5),  # type: ignore[arg-type]
            *(LlmDelta(**ids, index=n, text="word ", at=4.0) for n in range(12)),  # type: ignore[arg-type]
            RunCompleted(**ids, answer="The sky is blue.", at=5.0),  # type: ignore[arg-type]
            LockReleased(**ids, at=5.0),  # type: ignore[arg-type]
        ]
        for event in events:
            clock += 1
            by_partition[task_id % PARTITIONS].append(
                StoredEvent(entry_id=f"{clock}-0", stream_id=f"{clock}-0", event=event)
            )
    return by_partition


async def measure(tasks: int, database_url: str) -> None:
    engine = create_engine(database_url)
    await create_schema(engine)
    batches = workload(tasks)
    total = sum(len(b) for b in batches.values())
    started = time.perf_counter()
    for partition, events in batches.items():
        for i in range(0, len(events), 500):  # the live projector reads up to 500 at a time
            await apply_batch(engine, partition, events[i : i + 500])
    live_s = time.perf_counter() - started
    live = await snapshot(engine)
    report = await rebuild_from_archive(engine)
    rebuilt = await snapshot(engine)
    await engine.dispose()
    assert rebuilt == live, "rebuilt rows differ from the live projection"
    print(f"{tasks} tasks, {total} events, {database_url.split(':')[0]}")
    print(f"{'case':<34}{'seconds':>9}{'events/s':>11}{'x baseline':>12}")
    print(
        f"{'baseline: live projector writes':<34}{live_s:>9.2f}{total / live_s:>11,.0f}{1:>12.2f}"
    )
    ratio = (report.events / report.seconds) / (total / live_s)
    print(
        f"{'rebuild from the archive':<34}{report.seconds:>9.2f}"
        f"{report.events_per_second:>11,.0f}{ratio:>12.2f}"
    )
    print("rebuilt rows are identical to the live ones")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        asyncio.run(measure(args.tasks, url))


if __name__ == "__main__":
    main()
