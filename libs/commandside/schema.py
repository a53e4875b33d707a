"""The command side's tables: the run claims (the database layer of duplicate protection) and
the task-id counter.

Not read models: written only by the command side, never shown to users directly and never
rebuilt from events. `run_claims` has one row per task, written only by the lock protocol (the
gateway on request, the runner on start and finish). `id_counters` has one row per kind of id
("task"): the last id handed out, so an id is never handed out twice (`task_ids`).
"""

from __future__ import annotations

import sqlalchemy as sa

from libs.common.database import metadata

__all__ = ["id_counters", "run_claims"]

run_claims = sa.Table(
    "run_claims",
    metadata,
    sa.Column("task_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("fence", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

id_counters = sa.Table(
    "id_counters",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
)
