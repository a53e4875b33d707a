"""The SQL read models (written only by the projector), its positions and the event archive."""

from __future__ import annotations

import sqlalchemy as sa

from libs.common.database import metadata

__all__ = [
    "READ_MODELS",
    "activity",
    "event_archive",
    "parked_events",
    "projector_positions",
    "runs",
    "tasks",
]

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("last_run_id", sa.String(64), nullable=False, default=""),
    sa.Column("last_answer", sa.Text, nullable=False, default=""),
    sa.Column("last_error", sa.Text, nullable=False, default=""),
    sa.Column("runs", sa.Integer, nullable=False, default=0),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("task_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("fence", sa.BigInteger, nullable=False, default=0),
    sa.Column("query", sa.Text, nullable=False, default=""),
    sa.Column("answer", sa.Text, nullable=False, default=""),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
)

activity = sa.Table(
    "activity",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("entry_id", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False, default=""),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.UniqueConstraint("task_id", "entry_id", name="uq_activity_entry"),
)

projector_positions = sa.Table(
    "projector_positions",
    metadata,
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_id", sa.String(32), nullable=False),
)

# Every event that reached the log, written by the projector in the same transaction as the
# rows it produced: history that survives trimming of the Redis streams, and what
# `ragpoc rebuild` replays.
event_archive = sa.Table(
    "events",
    metadata,
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("log_id", sa.String(32), primary_key=True),
    sa.Column("log_ms", sa.BigInteger, nullable=False),
    sa.Column("log_seq", sa.BigInteger, nullable=False),
    sa.Column("task_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("stream_id", sa.String(32), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Index("ix_events_replay_order", "partition", "log_ms", "log_seq"),
)

# Log entries the projector could not fold: entries that are no known event, and events the
# database refused. Written in the transaction that moves the projector's position past them,
# so the trimmer may drop them from the partition log (its bound is that position): this table
# keeps them until an operator replays them (`libs.readmodels.replay.replay_parked`). Every
# text column but the log id is unbounded Text: an entry written by hand may carry anything.
parked_events = sa.Table(
    "parked_events",
    metadata,
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("log_id", sa.String(48), primary_key=True),
    sa.Column("task_id", sa.BigInteger, nullable=True, index=True),  # None: the entry names none
    sa.Column("stream_id", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("raw", sa.Text, nullable=False),  # every field of the log entry, as a JSON object
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("parked_at", sa.Float, nullable=False),
)

# What `ragpoc rebuild` drops and recreates from the archive.
READ_MODELS = (tasks, runs, activity, projector_positions)
