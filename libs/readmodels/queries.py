"""Read-side queries over the read models, for the gateway."""

from __future__ import annotations

from typing import TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.events import StoredEvent, decode_event
from libs.readmodels.projection import ActivityItem, RunView, TaskView
from libs.readmodels.schema import (
    activity,
    event_archive,
    parked_events,
    projector_positions,
    runs,
    tasks,
)

__all__ = [
    "ParkedView",
    "archived_task_events",
    "count_parked",
    "from_row",
    "get_task",
    "list_activity",
    "list_parked",
    "list_runs",
    "list_tasks",
    "projected_position",
]


S = TypeVar("S", bound=msgspec.Struct)


class ParkedView(msgspec.Struct, frozen=True, kw_only=True):
    """A parked partition-log entry (`parked_events`): `raw` holds every field of the entry as
    a JSON object, `reason` why the projector set it aside, `parked_at` when (epoch seconds)."""

    partition: int
    log_id: str
    task_id: int | None
    stream_id: str
    type: str
    raw: str
    reason: str
    parked_at: float


def from_row(type_: type[S], row: RowMapping) -> S:
    """A read-model row as its Struct (SQLAlchemy's column names are str subclasses)."""
    return msgspec.convert({str(key): value for key, value in row.items()}, type_)


async def get_task(engine: AsyncEngine, task_id: int) -> TaskView | None:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(tasks).where(tasks.c.id == task_id))).mappings().first()
    return None if row is None else from_row(TaskView, row)


async def list_tasks(
    engine: AsyncEngine, *, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[TaskView]:
    query = sa.select(tasks).order_by(tasks.c.id.desc()).limit(limit).offset(offset)
    if status:
        query = query.where(tasks.c.status == status)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [from_row(TaskView, row) for row in rows]


async def list_runs(engine: AsyncEngine, task_id: int) -> list[RunView]:
    query = sa.select(runs).where(runs.c.task_id == task_id).order_by(runs.c.requested_at.desc())
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [from_row(RunView, row) for row in rows]


async def list_activity(engine: AsyncEngine, task_id: int) -> list[ActivityItem]:
    query = sa.select(activity).where(activity.c.task_id == task_id).order_by(activity.c.id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [from_row(ActivityItem, row) for row in rows]


async def projected_position(engine: AsyncEngine, partition: int) -> str | None:
    query = sa.select(projector_positions.c.last_id).where(
        projector_positions.c.partition == partition
    )
    async with engine.connect() as conn:
        return (await conn.execute(query)).scalar_one_or_none()


async def archived_task_events(
    engine: AsyncEngine, task_id: int, *, types: frozenset[str] | None = None
) -> list[StoredEvent]:
    """Every archived event of a task (only those of `types`, if given), in log order
    (`entry_id` is the partition-log id)."""
    query = (
        sa.select(event_archive.c.log_id, event_archive.c.stream_id, event_archive.c.body)
        .where(event_archive.c.task_id == task_id)
        .order_by(event_archive.c.log_ms, event_archive.c.log_seq)
    )
    if types is not None:
        query = query.where(event_archive.c.type.in_(sorted(types)))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        StoredEvent(entry_id=row.log_id, stream_id=row.stream_id, event=decode_event(row.body))
        for row in rows
    ]


async def list_parked(
    engine: AsyncEngine, *, limit: int | None = None, task_id: int | None = None
) -> list[ParkedView]:
    """The parked entries (only the task's, if given), the most recently parked first."""
    query = sa.select(parked_events).order_by(
        parked_events.c.parked_at.desc(), parked_events.c.partition, parked_events.c.log_id
    )
    if task_id is not None:
        query = query.where(parked_events.c.task_id == task_id)
    if limit is not None:
        query = query.limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [from_row(ParkedView, row) for row in rows]


async def count_parked(engine: AsyncEngine) -> int:
    query = sa.select(sa.func.count()).select_from(parked_events)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())
