"""Events of a task's own life."""

from __future__ import annotations

from libs.events.envelope import Event

__all__ = ["TaskCreated", "TaskEvent"]


class TaskCreated(Event, frozen=True, kw_only=True, tag="task.created"):
    """A task was created."""

    title: str
    description: str = ""


TaskEvent = TaskCreated
