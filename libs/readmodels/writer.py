"""Writes a batch of a partition's events into the read models in one transaction.

The projector's position for the partition is advanced in the same transaction, with a
compare-and-set on the previous position: an event delivered twice (a restart, a second
projector) is recognised as already projected and changes nothing. The transaction locks the
position's row first (FOR UPDATE, on PostgreSQL), so every writer of a partition's rows, the
projector and a replay of parked events alike, takes its turn.

A batch costs the same few statements however many events it holds: one query loads the tasks
its events name and one their runs, the pure `libs.readmodels.folding` works out the rows, and
each kind of row (archive, activity, new and changed tasks and runs) is written with one
executemany.

Entries the projector could not fold (`ParkedEntry`: not a known event, or refused by the
database) are written to `parked_events` in the transaction that moves the position past them.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.common.database import write_transaction
from libs.events import StoredEvent, encode
from libs.events.ids import entry_key, is_after
from libs.readmodels.errors import LostRace
from libs.readmodels.folding import RowChanges, event_type, fold_batch
from libs.readmodels.projection import RunView, TaskView
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
    "apply_partitions",
    "archive_row",
    "fold",
    "load_positions",
    "write_changes",
]

S = TypeVar("S", bound=msgspec.Struct)
E = TypeVar("E", "StoredEvent", "ParkedEntry")

# Ids per load query: far below what SQLite and PostgreSQL accept as parameters of a statement.
LOAD_CHUNK = 1000
# The bound parameter that names the row an update of many rows sets (not a column name).
_KEY_PARAM = "row_key"


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


async def _positions(conn: AsyncConnection, partitions: Collection[int]) -> dict[int, str]:
    """The stored positions, their rows locked until the transaction ends (PostgreSQL; SQLite
    has one writer at a time anyway)."""
    result = await conn.execute(
        sa.select(projector_positions.c.partition, projector_positions.c.last_id)
        .where(projector_positions.c.partition.in_(list(partitions)))
        .with_for_update()
    )
    return {row.partition: row.last_id for row in result}


async def _load(
    conn: AsyncConnection, table: sa.Table, key: sa.Column[Any], ids: Collection[Any], kind: type[S]
) -> dict[Any, S]:
    """The rows of `table` whose `key` is one of `ids`, as `kind`: one query per LOAD_CHUNK ids
    (one per batch for any batch the projector reads)."""
    found: dict[Any, S] = {}
    wanted = list(ids)
    for start in range(0, len(wanted), LOAD_CHUNK):
        query = sa.select(table).where(key.in_(wanted[start : start + LOAD_CHUNK]))
        for row in (await conn.execute(query)).mappings():
            found[row[key.name]] = from_row(kind, row)
    return found


async def apply_batch(
    engine: AsyncEngine,
    partition: int,
    batch: Sequence[StoredEvent],
    *,
    archive: bool = True,
    parked: Sequence[ParkedEntry] = (),
) -> str:
    """Project the events of `batch` and park the `parked` entries that lie after the stored
    position (each sequence in log order); returns the position now stored (the newest of
    both). Raises LostRace (and writes nothing) when another projector moved first."""
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
    applied = await apply_partitions(engine, {partition: (batch, parked)}, archive=archive)
    return applied[partition]


async def apply_partitions(
    engine: AsyncEngine,
    batches: Mapping[int, tuple[Sequence[StoredEvent], Sequence[ParkedEntry]]],
    *,
    archive: bool = True,
) -> dict[int, Applied]:
    """`apply_entries` for several partitions in one transaction (what the projector read in
    one step): the same statements as one partition's batch, so a step costs one commit, not
    one per partition. Raises IntegrityError (a lost race or refused data) with nothing
    written; the caller then goes partition by partition to tell which."""
    async with write_transaction(engine) as conn:
        stored = await _positions(conn, batches)
        applied: dict[int, Applied] = {}
        fresh: dict[int, tuple[Sequence[StoredEvent], Sequence[ParkedEntry]]] = {}
        for partition, (batch, parked) in batches.items():
            events = _after(batch, stored.get(partition))
            to_park = _after(parked, stored.get(partition))
            if events or to_park:
                fresh[partition] = (events, to_park)
            else:
                applied[partition] = Applied(stored.get(partition) or "0-0", 0, ())
        rows = [archive_row(p, e) for p, (events, _) in fresh.items() for e in events]
        if archive and rows:  # on SQLite the first write takes the lock: before more reads
            await conn.execute(event_archive.insert(), rows)
        for partition, (_, to_park) in fresh.items():
            await _park(conn, partition, to_park)
        await fold(conn, [e for events, _ in fresh.values() for e in events])
        for partition, (events, to_park) in fresh.items():
            newest = [entries[-1].entry_id for entries in (events, to_park) if entries]
            position = max(newest, key=entry_key)
            await _move(conn, partition, stored.get(partition), position)
            applied[partition] = Applied(position, len(events), tuple(to_park))
        return applied


async def _move(conn: AsyncConnection, partition: int, stored: str | None, to: str) -> None:
    """Set the partition's position from `stored` to `to`; LostRace if it was not `stored`."""
    if stored is None:
        await conn.execute(projector_positions.insert().values(partition=partition, last_id=to))
        return
    updated = await conn.execute(
        projector_positions.update()
        .where(projector_positions.c.partition == partition)
        .where(projector_positions.c.last_id == stored)
        .values(last_id=to)
    )
    if updated.rowcount != 1:
        raise LostRace


def _after(entries: Sequence[E], position: str | None) -> Sequence[E]:
    """The entries after `position`. They are in log order: when the first is after it, all
    are (the usual case, checked once rather than per entry)."""
    if position is None or not entries or is_after(entries[0].entry_id, position):
        return entries
    return [e for e in entries if is_after(e.entry_id, position)]


async def fold(conn: AsyncConnection, events: Sequence[StoredEvent]) -> None:
    """Fold `events` (in log order) into the task, run and activity rows, on top of the rows
    as they stand: one query loads the tasks they name, one the runs, the pure `fold_batch`
    works out the rows, and `write_changes` writes them."""
    task_ids = {stored.event.task_id for stored in events}
    run_ids = {stored.event.run_id for stored in events} - {""}
    stored_tasks = await _load(conn, tasks, tasks.c.id, task_ids, TaskView)
    stored_runs = await _load(conn, runs, runs.c.run_id, run_ids, RunView)
    await write_changes(conn, fold_batch(stored_tasks, stored_runs, events))


async def write_changes(conn: AsyncConnection, changes: RowChanges) -> None:
    """Apply a fold's row changes: one executemany per table and kind of change."""
    if changes.activity:
        await conn.execute(activity.insert(), changes.activity)
    await _insert_and_update(conn, tasks, tasks.c.id, changes.new_tasks, changes.changed_tasks)
    await _insert_and_update(conn, runs, runs.c.run_id, changes.new_runs, changes.changed_runs)


async def _insert_and_update(
    conn: AsyncConnection,
    table: sa.Table,
    key: sa.Column[Any],
    new: Sequence[dict[str, Any]],
    changed: Sequence[dict[str, Any]],
) -> None:
    if new:
        await conn.execute(table.insert(), new)
    if changed:  # SET every column but the key, which the WHERE clause matches as _KEY_PARAM
        statement = table.update().where(key == sa.bindparam(_KEY_PARAM))
        params = [{**row, _KEY_PARAM: row[key.name]} for row in changed]
        for row in params:
            del row[key.name]
        await conn.execute(statement, params)


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


def archive_row(partition: int, stored: StoredEvent) -> dict[str, object]:
    ms, seq = entry_key(stored.entry_id)
    return {
        "partition": partition,
        "log_id": stored.entry_id,
        "log_ms": ms,
        "log_seq": seq,
        "task_id": stored.event.task_id,
        "stream_id": stored.stream_id,
        "type": event_type(stored.event),
        "body": encode(stored.event).decode(),
    }
