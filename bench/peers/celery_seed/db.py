"""The seed peer's task table in SQLite, with blocking calls (the app runs them in a thread,
the Celery task calls them directly). One short-lived connection per call: every pool kind
(processes, threads, greenlets) can call it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

__all__ = ["create_schema", "create_task", "finish", "list_tasks", "mark_running", "question"]

BUSY_TIMEOUT_S = 30.0


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def create_schema(path: str) -> None:
    with closing(_connect(path)) as db:
        db.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the many writers
        db.execute(
            "CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " title TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',"
            " status TEXT NOT NULL DEFAULT 'new', answer TEXT)"
        )


def create_task(path: str, title: str, description: str) -> int:
    with closing(_connect(path)) as db:
        cursor = db.execute(
            "INSERT INTO tasks (title, description) VALUES (?, ?)", (title, description)
        )
        return int(cursor.lastrowid or 0)


def list_tasks(path: str, limit: int) -> list[dict[str, Any]]:
    with closing(_connect(path)) as db:
        rows = db.execute(
            "SELECT id, title, status FROM tasks ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
    return [{"id": row[0], "title": row[1], "status": row[2]} for row in rows]


def mark_running(path: str, task_id: int) -> str:
    """The seed's last layer: flip the task to 'running' unless it already is. Returns
    "ok", "running" (someone else's run holds it) or "missing"."""
    with closing(_connect(path)) as db:
        cursor = db.execute(
            "UPDATE tasks SET status = 'running' WHERE id = ? AND status != 'running'", (task_id,)
        )
        if cursor.rowcount == 1:
            return "ok"
        found = db.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return "running" if found else "missing"


def question(path: str, task_id: int) -> str:
    """The run's question, built as rag-poc's gateway builds it: title, blank line,
    description."""
    with closing(_connect(path)) as db:
        row = db.execute("SELECT title, description FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise LookupError(f"task {task_id} does not exist")
    return f"{row[0]}\n\n{row[1]}".strip()


def finish(path: str, task_id: int, status: str, answer: str | None) -> None:
    with closing(_connect(path)) as db:
        db.execute(
            "UPDATE tasks SET status = ?, answer = ? WHERE id = ?", (status, answer, task_id)
        )
