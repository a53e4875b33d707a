"""Rebuild speed: events per second that `ragpoc rebuild` folds from the archive into the read
models, against a raw `executemany` of the same rows (the baseline, same run, same database).

    .venv/bin/python -m bench.bench_rebuild [--tasks 500] [--rounds 3] [--database-url URL]

It writes a synthetic workload (per task: created, lock acquired, run requested, started,
retrieval, 12 token deltas, completed, lock released = 19 events) through the live projector's
writer (batches of 500, as the projector reads them: that fills the archive, and is timed too),
rebuilds the read models from the archive `--rounds` times and checks the rows are identical to
the live ones. The baseline inserts those final rows (tasks, runs, activity, positions) into a
fresh schema with one `executemany` per table in one transaction, `--rounds` times: the floor of
what writing the rebuild's output costs through the same engine, without reading or folding the
archive. Figures are medians of the rounds, events/s counts the workload's events.

The database is a fresh SQLite file by default. With `--database-url postgresql+psycopg://...`
(the driver the project uses) every case works in a schema of its own, created for the run and
dropped at the end, failure or not, so nothing else in that database is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

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
from libs.readmodels.schema import activity, projector_positions, runs, tasks
from tests.readmodel_snapshot import snapshot

PARTITIONS = 16
LIVE_BATCH = 500  # the live projector reads up to 500 entries of a partition at a time

Rows = dict[str, list[dict[str, Any]]]
TABLES = {"tasks": tasks, "runs": runs, "activity": activity, "positions": projector_positions}


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


class ScratchDatabases:
    """Fresh, empty databases on the server `base_url` names (or SQLite files in `folder`),
    each removed by `close`: a PostgreSQL one is a schema of its own in that database."""

    def __init__(self, base_url: str | None, folder: Path) -> None:
        self.base_url = base_url
        self.folder = folder
        self.schemas: list[str] = []

    def new(self) -> str:
        name = f"bench_rebuild_{uuid.uuid4().hex[:12]}"
        if self.base_url is None:
            return f"sqlite+aiosqlite:///{self.folder / name}.db"
        with psycopg.connect(self._libpq_url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.schemas.append(name)
        url = make_url(self.base_url).update_query_dict({"options": f"-csearch_path={name}"})
        return url.render_as_string(hide_password=False)

    def close(self) -> None:
        if not self.schemas:
            return
        with psycopg.connect(self._libpq_url(), autocommit=True) as conn:
            for name in self.schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        self.schemas.clear()

    def _libpq_url(self) -> str:
        assert self.base_url is not None
        url = make_url(self.base_url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)


@asynccontextmanager
async def scratch_databases(base_url: str | None) -> AsyncIterator[ScratchDatabases]:
    if base_url is not None and make_url(base_url).get_backend_name() != "postgresql":
        raise SystemExit("--database-url: a postgresql+psycopg:// URL (SQLite is the default)")
    with tempfile.TemporaryDirectory() as folder:
        databases = ScratchDatabases(base_url, Path(folder))
        try:
            yield databases
        finally:
            databases.close()


async def live_projection(url: str, batches: dict[int, list[StoredEvent]]) -> tuple[float, Rows]:
    """Apply the workload with the live projector's writer: its seconds and the rows."""
    engine = create_engine(url)
    try:
        await create_schema(engine)
        started = time.perf_counter()
        for partition, events in batches.items():
            for i in range(0, len(events), LIVE_BATCH):
                await apply_batch(engine, partition, events[i : i + LIVE_BATCH])
        seconds = time.perf_counter() - started
        return seconds, await snapshot(engine)
    finally:
        await engine.dispose()


async def rebuild_once(url: str) -> tuple[float, Rows]:
    """`ragpoc rebuild` from the archive: its seconds and the rows it gives."""
    engine = create_engine(url)
    try:
        report = await rebuild_from_archive(engine)
        return report.seconds, await snapshot(engine)
    finally:
        await engine.dispose()


async def raw_executemany(url: str, rows: Rows) -> float:
    """Insert `rows` into the fresh database at `url`, one executemany per table in one
    transaction: its seconds (creating the schema and connecting are not counted)."""
    engine = create_engine(url)
    try:
        await create_schema(engine)
        started = time.perf_counter()
        async with engine.begin() as conn:
            for name, table in TABLES.items():
                if rows[name]:
                    await conn.execute(table.insert(), rows[name])
        seconds = time.perf_counter() - started
        async with engine.connect() as conn:  # the rows are there: the baseline did the work
            count = sa.select(sa.func.count()).select_from(activity)
            assert (await conn.execute(count)).scalar_one() == len(rows["activity"])
        return seconds
    finally:
        await engine.dispose()


async def median_seconds(rounds: int, once: Callable[[], Awaitable[float]]) -> float:
    return statistics.median([await once() for _ in range(rounds)])


async def measure(tasks: int, rounds: int, database_url: str | None) -> None:
    batches = workload(tasks)
    total = sum(len(b) for b in batches.values())
    async with scratch_databases(database_url) as databases:
        url = databases.new()
        live_s, live = await live_projection(url, batches)
        rebuild_times = []
        for _ in range(rounds):
            seconds, rebuilt = await rebuild_once(url)
            assert rebuilt == live, "rebuilt rows differ from the live projection"
            rebuild_times.append(seconds)
        rebuild_s = statistics.median(rebuild_times)
        raw_s = await median_seconds(rounds, lambda: raw_executemany(databases.new(), live))
    rows = sum(len(table_rows) for table_rows in live.values())
    print(f"{tasks} tasks, {total} events, {rows} read-model rows, {url.split(':')[0]}")
    print(f"medians of {rounds} rounds (the live writer: 1 round)")
    print(f"{'case':<42}{'seconds':>9}{'events/s':>11}{'x raw':>8}")
    for name, seconds in (
        ("baseline: raw executemany of the rows", raw_s),
        ("live projector writer (batches of 500)", live_s),
        ("rebuild from the archive", rebuild_s),
    ):
        print(f"{name:<42}{seconds:>9.3f}{total / seconds:>11,.0f}{raw_s / seconds:>8.2f}")
    print("rebuilt rows are identical to the live ones")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--database-url", help="a postgresql+psycopg:// URL; default: fresh SQLite files"
    )
    args = parser.parse_args()
    asyncio.run(measure(args.tasks, args.rounds, args.database_url))


if __name__ == "__main__":
    main()
