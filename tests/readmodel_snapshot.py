"""The read models as plain rows, to compare the live projector's with a rebuild's."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.readmodels.schema import activity, projector_positions, runs, tasks

__all__ = ["snapshot"]


async def snapshot(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """Every read-model row (activity without its serial id), in a stable order."""
    tables = {  # each ordered by its natural key (an entry id is unique within its task)
        "tasks": (tasks, [tasks.c.id]),
        "runs": (runs, [runs.c.run_id]),
        "activity": (activity, [activity.c.task_id, activity.c.entry_id]),
        "positions": (projector_positions, [projector_positions.c.partition]),
    }
    result: dict[str, list[dict[str, Any]]] = {}
    async with engine.connect() as conn:
        for name, (table, order) in tables.items():
            rows = (await conn.execute(sa.select(table).order_by(*order))).mappings().all()
            result[name] = [
                {k: v for k, v in row.items() if k != "id" or name != "activity"} for row in rows
            ]
    return result
