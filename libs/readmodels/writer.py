"""Writes a batch of a partition's events into the read models in one transaction.

The projector's position for the partition is advanced in the same transaction, with a
compare-and-set on the previous position: an event delivered twice (a restart, a second
projector) is recognised as already projected and changes nothing. The transaction locks the
position's row first (FOR UPDATE, on PostgreSQL), so every writer of a partition's rows, the
projector and a replay of parked events alike, takes its turn.

Entries the projector could not fold (`ParkedEntry`: not a known event, or refused by the
database) are written to `parked_events` in the transaction that moves the position past them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.events import StoredEvent, encode
from libs.events.ids import entry_key, is_after
from libs.readmodels.errors import LostRace
from libs.readmodels.projection import RunView, TaskView, project_run, project_task, summarize
from libs.readmodels.queries import from_row
from libs.readmodels.schema import (
    activity,
    event_archive,
    parked_events,
    projector_positions,
    runs,
    tasks,
)

__all__ = [
    "Applied",
    "LostRace",
    "ParkedEntry",
    "apply_batch",
    "apply_entries",
    "archive_row",
    "fold",
    "load_positions",
]


@dataclass(frozen=True, slots=True)
class ParkedEntry:
    """A partition-log entry set aside instead of folded: `raw` is every field of the entry as
    a JSON object, `reason` why it was set aside. `task_id` is None when the entry names no
    task that fits the read models."""

    entry_id: str
    stream_id: str
    task_id: int | None
    type: str
    raw: str
    reason: str


@dataclass(frozen=True, slots=True)
class Applied:
    """What one transaction wrote: the position now stored, how many events it projected and
    which entries it parked (none of what an earlier one wrote: a redelivery counts 0)."""

    position: str
    events: int
    parked: tuple[ParkedEntry, ...]


async def load_positions(engine: AsyncEngine) -> dict[int, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(projector_positions))
        return {row.partition: row.last_id for row in rows}


async def _position(conn: AsyncConnection, partition: int) -> str | None:
    """The stored position, its row locked until the transaction ends (PostgreSQL; SQLite has
    one writer at a time anyway)."""
    result = await conn.execute(
        sa.select(projector_positions.c.last_id)
        .where(projector_positions.c.partition == partition)
        .with_for_update()
    )
    return result.scalar_one_or_none()


async def _load_task(conn: AsyncConnection, task_id: int) -> TaskView | None:
    row = (await conn.execute(sa.select(tasks).where(tasks.c.id == task_id))).mappings().first()
    return None if row is None else from_row(TaskView, row)


async def _load_run(conn: AsyncConnection, run_id: str) -> RunView | None:
    row = (await conn.execute(sa.select(runs).where(runs.c.run_id == run_id))).mappings().first()
    return None if row is None else from_row(RunView, row)


async def apply_batch(
    engine: AsyncEngine,
    partition: int,
    batch: Sequence[StoredEvent],
    *,
    archive: bool = True,
    parked: Sequence[ParkedEntry] = (),
) -> str:
    """Project the events of `batch` and park the `parked` entries that lie after the stored
    position; returns the position now stored (the newest of both). Raises LostRace (and
    writes nothing) when another projector moved first."""
    applied = await apply_entries(engine, partition, batch, archive=archive, parked=parked)
    return applied.position


async def apply_entries(
    engine: AsyncEngine,
    partition: int,
    batch: Sequence[StoredEvent],
    *,
    archive: bool = True,
    parked: Sequence[ParkedEntry] = (),
) -> Applied:
    """`apply_batch`, saying what it wrote."""
    try:
        return await _apply(engine, partition, batch, archive, parked)
    except IntegrityError as exc:  # the other projector's rows or position landed first
        raise LostRace(str(exc.orig)) from exc


async def _apply(
    engine: AsyncEngine,
    partition: int,
    batch: Sequence[StoredEvent],
    archive: bool,
    parked: Sequence[ParkedEntry],
) -> Applied:
    async with engine.begin() as conn:
        stored = await _position(conn, partition)
        fresh = [e for e in batch if stored is None or is_after(e.entry_id, stored)]
        fresh_parked = [p for p in parked if stored is None or is_after(p.entry_id, stored)]
        if not fresh and not fresh_parked:
            return Applied(stored or "0-0", 0, ())
        if archive and fresh:  # on SQLite the first write takes the lock: before any read
            await conn.execute(event_archive.insert(), [archive_row(partition, e) for e in fresh])
        await _park(conn, partition, fresh_parked)
        await fold(conn, fresh)
        ids = [e.entry_id for e in fresh] + [p.entry_id for p in fresh_parked]
        new_position = max(ids, key=entry_key)
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
        return Applied(new_position, len(fresh), tuple(fresh_parked))


async def fold(conn: AsyncConnection, events: Sequence[StoredEvent]) -> None:
    """Fold `events` (in log order) into the task, run and activity rows, on top of the rows
    as they stand."""
    task_rows: dict[int, tuple[TaskView | None, TaskView | None]] = {}
    run_rows: dict[str, tuple[RunView | None, RunView | None]] = {}
    for stored_event in events:
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


async def _park(conn: AsyncConnection, partition: int, entries: Sequence[ParkedEntry]) -> None:
    """Insert the entries not parked yet (one is parked again when the projector reads it a
    second time: after a rebuild reset its position)."""
    if not entries:
        return
    known = set(
        (
            await conn.execute(
                sa.select(parked_events.c.log_id)
                .where(parked_events.c.partition == partition)
                .where(parked_events.c.log_id.in_([e.entry_id for e in entries]))
            )
        ).scalars()
    )
    rows = [
        {
            "partition": partition,
            "log_id": e.entry_id,
            "task_id": e.task_id,
            "stream_id": e.stream_id,
            "type": e.type,
            "raw": e.raw,
            "reason": e.reason,
            "parked_at": time.time(),
        }
        for e in entries
        if e.entry_id not in known
    ]
    if rows:
        await conn.execute(parked_events.insert(), rows)


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


def archive_row(partition: int, stored: StoredEvent) -> dict[str, object]:
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
