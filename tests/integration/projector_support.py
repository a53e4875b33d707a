"""What the projector fault tests share: a database rule that refuses some task titles (on
SQLite and PostgreSQL alike) and lifting it again, the read models as comparable rows, what
reached the archive, and the projector's log lines."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.readmodels.schema import event_archive


class LogLines:
    """Stands in for `services.projector.main.log` (monkeypatched): the events logged, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def _record(self, event: str, **fields: Any) -> None:
        self.events.append(event)

    info = warning = error = _record

    def count(self, event: str) -> int:
        return self.events.count(event)


POISON = "poison"  # a task title containing it is refused while the rule stands


def on_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


async def refuse_poisoned_titles(engine: AsyncEngine) -> None:
    """From now on the database refuses a task whose title contains POISON (IntegrityError):
    a CHECK constraint on PostgreSQL, a trigger on SQLite (which cannot add constraints)."""
    if on_postgres(engine):
        ddl = f"ALTER TABLE tasks ADD CONSTRAINT no_poison CHECK (title NOT LIKE '%{POISON}%')"
    else:
        ddl = (
            f"CREATE TRIGGER no_poison BEFORE INSERT ON tasks WHEN NEW.title LIKE '%{POISON}%' "
            "BEGIN SELECT RAISE(ABORT, 'no_poison: poisoned title'); END"
        )
    async with engine.begin() as conn:
        await conn.execute(sa.text(ddl))


async def accept_poisoned_titles(engine: AsyncEngine) -> None:
    """The operator's fix: the rule is gone."""
    if on_postgres(engine):
        ddl = "ALTER TABLE tasks DROP CONSTRAINT no_poison"
    else:
        ddl = "DROP TRIGGER no_poison"
    async with engine.begin() as conn:
        await conn.execute(sa.text(ddl))


async def archived_ids(engine: AsyncEngine) -> list[tuple[int, str]]:
    """(partition, log id) of every archived event, duplicates kept (there must be none)."""
    query = sa.select(event_archive.c.partition, event_archive.c.log_id)
    async with engine.connect() as conn:
        return [(row.partition, row.log_id) for row in await conn.execute(query)]
