"""`ragpoc rebuild`: drop the read models and fold the archived events through the same
projection functions and writer as the live projector, so the rows come out identical."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.database import create_schema, metadata
from libs.events import StoredEvent, decode_event
from libs.readmodels.schema import READ_MODELS, event_archive
from libs.readmodels.writer import apply_batch

__all__ = ["RebuildReport", "drop_read_models", "rebuild_from_archive"]

PAGE = 1000


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
    started = time.perf_counter()
    await drop_read_models(engine)
    async with engine.connect() as conn:
        partitions = list(
            (await conn.execute(sa.select(event_archive.c.partition).distinct())).scalars()
        )
    total = 0
    for partition in sorted(partitions):
        after = (-1, -1)
        while True:
            page = await _page(engine, partition, after)
            if not page:
                break
            await apply_batch(engine, partition, [stored for stored, _ in page], archive=False)
            total += len(page)
            after = page[-1][1]
            if progress is not None:
                progress(len(page))
    return RebuildReport(total, len(partitions), time.perf_counter() - started)


async def _page(
    engine: AsyncEngine, partition: int, after: tuple[int, int]
) -> list[tuple[StoredEvent, tuple[int, int]]]:
    ms, seq = event_archive.c.log_ms, event_archive.c.log_seq
    query = (
        sa.select(event_archive)
        .where(event_archive.c.partition == partition)
        .where(sa.or_(ms > after[0], sa.and_(ms == after[0], seq > after[1])))
        .order_by(ms, seq)
        .limit(PAGE)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [
        (
            StoredEvent(
                entry_id=row["log_id"], stream_id=row["stream_id"], event=decode_event(row["body"])
            ),
            (row["log_ms"], row["log_seq"]),
        )
        for row in rows
    ]
