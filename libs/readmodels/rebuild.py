"""`ragpoc rebuild`: drop the read models and fold the archived events through the same
projection functions and writer as the live projector, so the rows come out identical.

Each partition's archive is read in log order, PAGE events at a time, and each page is applied
as one batch of the writer (one transaction that also stores the partition's position): a
rebuild that stops midway leaves read models the projector can go on from. A page is larger than
a live batch because the writer's cost is per statement, not per event."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.database import create_schema, metadata
from libs.events import StoredEvent, decode_event
from libs.events.ids import entry_key
from libs.readmodels.schema import READ_MODELS, event_archive
from libs.readmodels.writer import apply_batch

__all__ = ["RebuildReport", "drop_read_models", "rebuild_from_archive"]

PAGE = 5000


@dataclass(frozen=True, slots=True)
class RebuildReport:
    events: int
    partitions: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def drop_read_models(engine: AsyncEngine, *, archive_too: bool = False) -> None:
    tables = [*READ_MODELS, event_archive] if archive_too else list(READ_MODELS)
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: metadata.drop_all(sync, tables=tables))
    await create_schema(engine)


async def rebuild_from_archive(
    engine: AsyncEngine, progress: Callable[[int], object] | None = None
) -> RebuildReport:
    with _older_objects_frozen():
        return await _rebuild(engine, progress)


@contextmanager
def _older_objects_frozen() -> Iterator[None]:
    """Keep the cyclic garbage collector off the objects alive when the rebuild starts (modules,
    caches, the engine: hundreds of thousands in a process that imports SQLAlchemy). A rebuild
    allocates objects by the million, so the collector runs its full collections over and over,
    each walking all of those again: half the rebuild's time, measured on SQLite. What the
    rebuild allocates is collected as usual. When something else froze objects already, the
    freeze (and the unfreeze) stays its own."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def _rebuild(engine: AsyncEngine, progress: Callable[[int], object] | None) -> RebuildReport:
    started = time.perf_counter()
    await drop_read_models(engine)
    async with engine.connect() as conn:
        partitions = list(
            (await conn.execute(sa.select(event_archive.c.partition).distinct())).scalars()
        )
    total = 0
    async for partition, events in _pages(engine, sorted(partitions)):
        await apply_batch(engine, partition, events, archive=False)
        total += len(events)
        if progress is not None:
            progress(len(events))
    return RebuildReport(total, len(partitions), time.perf_counter() - started)


async def _pages(
    engine: AsyncEngine, partitions: Sequence[int]
) -> AsyncIterator[tuple[int, list[StoredEvent]]]:
    """Every archived event of `partitions`, a page at a time, each partition in log order.
    (Reading the next page while the current one is applied measured no faster on SQLite.)"""
    for partition in partitions:
        after = None
        while events := await _page(engine, partition, after):
            yield partition, events
            if len(events) < PAGE:
                break
            after = events[-1].entry_id


async def _page(engine: AsyncEngine, partition: int, after: str | None) -> list[StoredEvent]:
    """The first PAGE archived events of `partition` after log id `after` (from the first
    when None), in log order."""
    ms, seq = event_archive.c.log_ms, event_archive.c.log_seq
    last = entry_key(after) if after is not None else (-1, -1)
    query = (
        sa.select(event_archive.c.log_id, event_archive.c.stream_id, event_archive.c.body)
        .where(event_archive.c.partition == partition)
        .where(sa.tuple_(ms, seq) > sa.tuple_(*last))  # a range of the replay-order index
        .order_by(ms, seq)
        .limit(PAGE)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        StoredEvent(entry_id=log_id, stream_id=stream_id, event=decode_event(body))
        for log_id, stream_id, body in rows
    ]
