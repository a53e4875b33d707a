"""Pure projection functions: `(state, event) -> state`, no I/O.

The projector folds every event of the log through these; `ragpoc rebuild` folds the same events
through the same functions, so live and rebuilt read models cannot differ.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec
from msgspec.structs import replace

from libs.events import (
    AnyEvent,
    LlmDelta,
    LockAcquired,
    LockConflict,
    LockExpired,
    LockLost,
    LockReleased,
    RetrievalDone,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunStarted,
    RunSuperseded,
    TaskCreated,
)

__all__ = [
    "ActivityItem",
    "RunStatus",
    "RunView",
    "TaskStatus",
    "TaskView",
    "project_run",
    "project_task",
    "summarize",
]


class TaskStatus(StrEnum):
    NEW = "new"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.DONE, RunStatus.FAILED, RunStatus.SUPERSEDED)


class TaskView(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    title: str
    description: str
    status: TaskStatus
    created_at: float
    updated_at: float
    last_run_id: str = ""
    last_answer: str = ""
    last_error: str = ""
    runs: int = 0


class RunView(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    task_id: int
    status: RunStatus
    requested_at: float
    fence: int = 0
    query: str = ""
    answer: str = ""
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None


class ActivityItem(msgspec.Struct, frozen=True, kw_only=True):
    task_id: int
    entry_id: str
    run_id: str
    type: str
    at: float
    summary: str


def project_task(task: TaskView | None, event: AnyEvent) -> TaskView | None:
    match event:
        case LlmDelta():  # first: the most frequent event (one per token) moves no task
            return task
        case TaskCreated():
            if task is not None:
                return task
            return TaskView(
                id=event.task_id,
                title=event.title,
                description=event.description,
                status=TaskStatus.NEW,
                created_at=event.at,
                updated_at=event.at,
            )
        case _ if task is None:
            return None
        case RunRequested():
            return replace(
                task,
                status=TaskStatus.QUEUED,
                last_run_id=event.run_id,
                last_error="",
                runs=task.runs + 1,
                updated_at=event.at,
            )
        case _ if event.run_id != task.last_run_id:
            return task  # a late event of an older run does not move the task
        case RunStarted():
            return replace(task, status=TaskStatus.RUNNING, updated_at=event.at)
        case RunCompleted():
            return replace(
                task, status=TaskStatus.DONE, last_answer=event.answer, updated_at=event.at
            )
        case RunFailed():
            return replace(
                task, status=TaskStatus.FAILED, last_error=event.reason, updated_at=event.at
            )
        case RunSuperseded():
            error = f"superseded: {event.reason}"
            return replace(task, status=TaskStatus.FAILED, last_error=error, updated_at=event.at)
        case _:
            return task


def project_run(run: RunView | None, event: AnyEvent) -> RunView | None:
    match event:
        case LlmDelta():  # first: the most frequent event (one per token) moves no run
            return run
        case RunRequested():
            if run is not None:
                return run
            return RunView(
                run_id=event.run_id,
                task_id=event.task_id,
                status=RunStatus.QUEUED,
                fence=event.fence,
                query=event.query,
                requested_at=event.at,
            )
        case _ if run is None:
            return None
        case RunStarted():
            fence = max(run.fence, event.fence)
            return replace(run, status=RunStatus.RUNNING, started_at=event.at, fence=fence)
        case RunCompleted():
            return replace(run, status=RunStatus.DONE, answer=event.answer, finished_at=event.at)
        case RunFailed():
            return replace(run, status=RunStatus.FAILED, error=event.reason, finished_at=event.at)
        case RunSuperseded():
            return replace(
                run, status=RunStatus.SUPERSEDED, error=event.reason, finished_at=event.at
            )
        case LockAcquired() if event.fence > run.fence:
            return replace(run, fence=event.fence)
        case _:
            return run


def summarize(event: AnyEvent) -> str | None:
    """One line for the Activity timeline; None for events too fine-grained to list."""
    match event:
        case LlmDelta():  # first: the most frequent event (one per token)
            return None
        case TaskCreated():
            return f"Task created: {event.title}"
        case RunRequested():
            return f"Run {event.run_id[:8]} requested" + (f": {event.query}" if event.query else "")
        case RunStarted():
            return f"Run {event.run_id[:8]} started"
        case RunCompleted():
            return f"Run {event.run_id[:8]} completed: {event.answer[:200]}"
        case RunFailed():
            return f"Run {event.run_id[:8]} failed: {event.reason}"
        case RunSuperseded():
            return f"Run {event.run_id[:8]} superseded: {event.reason}"
        case RetrievalDone():
            titles = ", ".join(dict.fromkeys(c.title or c.doc_id[:8] for c in event.chunks))
            return f"Retrieved {len(event.chunks)} chunks" + (f" from {titles}" if titles else "")
        case LockAcquired():
            return f"Lock acquired by run {event.run_id[:8]} (fence {event.fence}, by {event.by})"
        case LockConflict():
            holder = event.holder_run_id[:8] or "another run"
            return f"Run request refused at the {event.layer} check: held by {holder}"
        case LockLost():
            return f"Run {event.run_id[:8]} lost its lock: {event.reason}"
        case LockExpired():
            return f"Lock of run {event.run_id[:8]} (fence {event.fence}) expired"
        case LockReleased():
            return f"Lock released by run {event.run_id[:8]}"
    return None
