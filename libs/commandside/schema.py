"""The command side's table: the run claims, the database layer of duplicate protection.

Not a read model: one row per task, written only by the lock protocol (the gateway on request,
the runner on start and finish), never shown to users directly and never rebuilt from events.
"""

from __future__ import annotations

import sqlalchemy as sa

from libs.common.database import metadata

__all__ = ["run_claims"]

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
