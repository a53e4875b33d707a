"""Read-side queries over the read models, for the gateway."""

from __future__ import annotations

from typing import TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.events import StoredEvent, decode_event
from libs.readmodels.projection import ActivityItem, RunView, TaskView
from libs.readmodels.schema import activity, event_archive, projector_positions, runs, tasks

__all__ = [
    "archived_task_events",
    "from_row",
    "get_task",
    "list_activity",
    "list_runs",
    "list_tasks",
    "projected_position",
]


S = TypeVar("S", bound=msgspec.Struct)


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
