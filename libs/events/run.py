"""Events of an agent run, from request to result."""

from __future__ import annotations

from libs.events.envelope import Event

__all__ = [
    "LlmDelta",
    "RunCompleted",
    "RunEvent",
    "RunFailed",
    "RunRequested",
    "RunStarted",
    "RunSuperseded",
]


class RunRequested(Event, frozen=True, kw_only=True, tag="run.requested"):
    query: str = ""


class RunStarted(Event, frozen=True, kw_only=True, tag="run.started"):
    worker: str = ""


class LlmDelta(Event, frozen=True, kw_only=True, tag="llm.delta"):
    index: int
    text: str


class RunCompleted(Event, frozen=True, kw_only=True, tag="run.completed"):
    answer: str
    duration_s: float = 0.0


class RunFailed(Event, frozen=True, kw_only=True, tag="run.failed"):
    reason: str
    duration_s: float = 0.0


class RunSuperseded(Event, frozen=True, kw_only=True, tag="run.superseded"):
    """The run lost its lock (paused, partitioned, too slow) and stopped; a newer run or none
    owns the task now. Its late writes were refused by the fence."""

    reason: str


RunEvent = RunRequested | RunStarted | LlmDelta | RunCompleted | RunFailed | RunSuperseded
