"""Writes a batch of a partition's events into the read models in one transaction.

The projector's position for the partition is advanced in the same transaction, with a
compare-and-set on the previous position: an event delivered twice (a restart, a second
projector) is recognised as already projected and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.events import StoredEvent, encode
from libs.events.ids import entry_key, is_after
from libs.readmodels.errors import LostRace
from libs.readmodels.projection import RunView, TaskView, project_run, project_task, summarize
from libs.readmodels.queries import from_row
from libs.readmodels.schema import activity, event_archive, projector_positions, runs, tasks

__all__ = ["LostRace", "apply_batch", "load_positions"]


async def load_positions(engine: AsyncEngine) -> dict[int, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(projector_positions))
        return {row.partition: row.last_id for row in rows}


async def _position(conn: AsyncConnection, partition: int) -> str | None:
    result = await conn.execute(
        sa.select(projector_positions.c.last_id).where(projector_positions.c.partition == partition)
    )
    return result.scalar_one_or_none()


async def _load_task(conn: AsyncConnection, task_id: int) -> TaskView | None:
    row = (await conn.execute(sa.select(tasks).where(tasks.c.id == task_id))).mappings().first()
    return None if row is None else from_row(TaskView, row)


async def _load_run(conn: AsyncConnection, run_id: str) -> RunView | None:
    row = (await conn.execute(sa.select(runs).where(runs.c.run_id == run_id))).mappings().first()
    return None if row is None else from_row(RunView, row)


async def apply_batch(
    engine: AsyncEngine, partition: int, batch: Sequence[StoredEvent], *, archive: bool = True
) -> str:
    """Project the events of `batch` that lie after the stored position; returns the position
    now stored. Raises LostRace (and writes nothing) when another projector moved first."""
    try:
        return await _apply(engine, partition, batch, archive)
    except IntegrityError as exc:  # the other projector's rows or position landed first
        raise LostRace(str(exc.orig)) from exc


async def _apply(
    engine: AsyncEngine, partition: int, batch: Sequence[StoredEvent], archive: bool
) -> str:
    async with engine.begin() as conn:
        stored = await _position(conn, partition)
        fresh = [e for e in batch if stored is None or is_after(e.entry_id, stored)]
        if not fresh:
            return stored or "0-0"
        task_rows: dict[int, tuple[TaskView | None, TaskView | None]] = {}
        run_rows: dict[str, tuple[RunView | None, RunView | None]] = {}
        if archive:
            await conn.execute(event_archive.insert(), [_archived(partition, e) for e in fresh])
        for stored_event in fresh:
            event = stored_event.event
            if event.task_id not in task_rows:
                loaded = await _load_task(conn, event.task_id)
                task_rows[event.task_id] = (loaded, loaded)
            before, current = task_rows[event.task_id]
            task_rows[event.task_id] = (before, project_task(current, event))
            if event.run_id:
                if event.run_id not in run_rows:
                    loaded_run = await _load_run(conn, event.run_id)
                    run_rows[event.run_id] = (loaded_run, loaded_run)
                run_before, run_current = run_rows[event.run_id]
                run_rows[event.run_id] = (run_before, project_run(run_current, event))
            summary = summarize(event)
            if summary is not None:
                await conn.execute(
                    activity.insert().values(
                        task_id=event.task_id,
                        entry_id=stored_event.stream_id,
                        run_id=event.run_id,
                        type=type(event).__struct_config__.tag,
                        at=event.at,
                        summary=summary,
                    )
                )
        for before, after in task_rows.values():
            await _save(conn, tasks, tasks.c.id, before, after)
        for run_before, run_after in run_rows.values():
            await _save(conn, runs, runs.c.run_id, run_before, run_after)
        new_position = fresh[-1].entry_id
        if stored is None:
            await conn.execute(
                projector_positions.insert().values(partition=partition, last_id=new_position)
            )
        else:
            updated = await conn.execute(
                projector_positions.update()
                .where(projector_positions.c.partition == partition)
                .where(projector_positions.c.last_id == stored)
                .values(last_id=new_position)
            )
            if updated.rowcount != 1:
                raise LostRace
        return new_position


async def _save(
    conn: AsyncConnection,
    table: sa.Table,
    key: sa.Column[object],
    before: msgspec.Struct | None,
    after: msgspec.Struct | None,
) -> None:
    if after is None or after == before:
        return
    values = msgspec.structs.asdict(after)
    if before is None:
        await conn.execute(table.insert().values(**values))
    else:
        await conn.execute(table.update().where(key == values[key.name]).values(**values))


def _archived(partition: int, stored: StoredEvent) -> dict[str, object]:
    ms, seq = entry_key(stored.entry_id)
    return {
        "partition": partition,
        "log_id": stored.entry_id,
        "log_ms": ms,
        "log_seq": seq,
        "task_id": stored.event.task_id,
        "stream_id": stored.stream_id,
        "type": type(stored.event).__struct_config__.tag,
        "body": encode(stored.event).decode(),
    }
