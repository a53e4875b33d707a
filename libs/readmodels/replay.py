"""Replaying parked entries once what refused them was fixed (an operator's command).

A parked entry lies below the projector's position: the projector went on without it, so the
rows of its task were folded without it. Replaying it archives it at its place in the log and
then refolds its task from the archive (every archived event of the task, in log order, through
the writer's own `fold`), so the task, its runs and its Activity come out as if the entry had
been folded in its turn: the same rows `ragpoc rebuild` would give. A task's rows depend on
that task's events only, so no other task is touched.

Each entry is replayed in its own transaction, which first locks the partition's position row:
the projector, which locks it too, cannot fold the task's next events in between. An entry that
still does not decode, or that the database still refuses, stays parked with the new reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.events import EventDecodeError, StoredEvent, decode_event
from libs.events.ids import entry_key, is_after
from libs.readmodels.parking import clean_text, refusal, rejected
from libs.readmodels.queries import ParkedView, list_parked
from libs.readmodels.schema import activity, event_archive, parked_events, projector_positions
from libs.readmodels.schema import runs as runs_table
from libs.readmodels.schema import tasks as tasks_table
from libs.readmodels.writer import archive_row, fold

__all__ = ["ReplayOutcome", "replay_parked"]


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What replaying one parked entry did: `replayed` (archived, folded and no longer parked),
    or why it is still parked."""

    partition: int
    log_id: str
    task_id: int | None
    type: str
    replayed: bool
    reason: str = ""


class _StillParked(Exception):
    """Ends an entry's replay transaction (rolled back) with the reason it stays parked."""


async def replay_parked(
    engine: AsyncEngine,
    *,
    partition: int | None = None,
    log_ids: Sequence[str] | None = None,
    task_id: int | None = None,
) -> list[ReplayOutcome]:
    """Replay the parked entries (those of `partition`, `log_ids` and `task_id`, when given),
    oldest first in log order; one outcome per entry."""
    chosen = [
        row
        for row in await list_parked(engine, task_id=task_id)
        if (partition is None or row.partition == partition)
        and (log_ids is None or row.log_id in log_ids)
    ]
    chosen.sort(key=lambda row: (row.partition, entry_key(row.log_id)))
    return [await _replay_one(engine, row) for row in chosen]


def _stored_event(row: ParkedView) -> StoredEvent:
    """The parked entry as an event; raises _StillParked when it still is none."""
    try:
        fields = msgspec.json.decode(row.raw, type=dict[str, str])
        event = decode_event(fields["data"])
    except KeyError:
        raise _StillParked("undecodable: the entry has no data field") from None
    except (msgspec.DecodeError, msgspec.ValidationError, EventDecodeError) as exc:
        raise _StillParked(f"undecodable: {exc}") from None
    return StoredEvent(entry_id=row.log_id, stream_id=fields.get("sid", row.log_id), event=event)


async def _replay_one(engine: AsyncEngine, row: ParkedView) -> ReplayOutcome:
    def outcome(replayed: bool, reason: str = "", task: int | None = row.task_id) -> ReplayOutcome:
        return ReplayOutcome(row.partition, row.log_id, task, row.type, replayed, reason)

    try:
        stored = _stored_event(row)
        async with engine.begin() as conn:
            await _lock_position(conn, row)
            await _archive_and_refold(conn, row, stored)
    except _StillParked as exc:
        return outcome(False, await _note(engine, row, str(exc)))
    except Exception as exc:
        if not rejected(exc):
            raise
        return outcome(False, await _note(engine, row, refusal(exc)))
    return outcome(True, task=stored.event.task_id)


async def _lock_position(conn: AsyncConnection, row: ParkedView) -> None:
    """Take the partition's position row (an update that changes nothing: the first write,
    which on SQLite takes the database's write lock, before anything is read) and check that
    the projector has passed the entry. Below its position, the projector would fold the entry
    itself when it reads it again (after a rebuild reset the position): replaying it too would
    fold it twice."""
    positions = projector_positions
    await conn.execute(
        positions.update()
        .where(positions.c.partition == row.partition)
        .values(last_id=positions.c.last_id)
    )
    query = sa.select(positions.c.last_id).where(positions.c.partition == row.partition)
    position = (await conn.execute(query)).scalar_one_or_none()
    if position is None or is_after(row.log_id, position):
        raise _StillParked(
            f"the projector has not passed it yet (its position is {position or 'none'}); it "
            "folds or parks the entry when it reads it"
        )


async def _archive_and_refold(conn: AsyncConnection, row: ParkedView, stored: StoredEvent) -> None:
    archived = await conn.execute(
        sa.select(event_archive.c.log_id)
        .where(event_archive.c.partition == row.partition)
        .where(event_archive.c.log_id == row.log_id)
    )
    await conn.execute(
        parked_events.delete()
        .where(parked_events.c.partition == row.partition)
        .where(parked_events.c.log_id == row.log_id)
    )
    if archived.first() is not None:  # the projector folded it since (after a rebuild)
        return
    await conn.execute(event_archive.insert().values(**archive_row(row.partition, stored)))
    await _refold(conn, stored.event.task_id)


async def _refold(conn: AsyncConnection, task_id: int) -> None:
    """Fold the task's rows again from its archived events, in log order."""
    await conn.execute(activity.delete().where(activity.c.task_id == task_id))
    await conn.execute(runs_table.delete().where(runs_table.c.task_id == task_id))
    await conn.execute(tasks_table.delete().where(tasks_table.c.id == task_id))
    query = (
        sa.select(event_archive.c.log_id, event_archive.c.stream_id, event_archive.c.body)
        .where(event_archive.c.task_id == task_id)
        .order_by(event_archive.c.log_ms, event_archive.c.log_seq)
    )
    rows = (await conn.execute(query)).all()
    await fold(
        conn,
        [
            StoredEvent(entry_id=r.log_id, stream_id=r.stream_id, event=decode_event(r.body))
            for r in rows
        ],
    )


async def _note(engine: AsyncEngine, row: ParkedView, reason: str) -> str:
    """Record why the entry is still parked; returns the reason as stored."""
    reason = clean_text(reason)
    async with engine.begin() as conn:
        await conn.execute(
            parked_events.update()
            .where(parked_events.c.partition == row.partition)
            .where(parked_events.c.log_id == row.log_id)
            .values(reason=reason)
        )
    return reason
