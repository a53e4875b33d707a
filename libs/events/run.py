"""Events of an agent run, from request to result."""

from __future__ import annotations

import msgspec

from libs.events.envelope import Event

__all__ = [
    "LlmDelta",
    "RetrievalDone",
    "RetrievedChunk",
    "RunCompleted",
    "RunEvent",
    "RunFailed",
    "RunRequested",
    "RunStarted",
    "RunSuperseded",
]


class RunRequested(Event, frozen=True, kw_only=True, tag="run.requested"):
    """A run of the task was admitted and queued (`query`: what it will ask)."""

    query: str = ""


class RetrievedChunk(msgspec.Struct, frozen=True, kw_only=True):
    """A chunk the run retrieved, as the answer's source."""

    doc_id: str
    chunk_index: int = 0
    title: str = ""
    source: str = ""
    text: str
    score: float


class RetrievalDone(Event, frozen=True, kw_only=True, tag="retrieval.done"):
    """The run retrieved its context: the chunks nearest to `query`, with their scores."""

    query: str
    chunks: list[RetrievedChunk] = msgspec.field(default_factory=list)
    duration_s: float = 0.0


class RunStarted(Event, frozen=True, kw_only=True, tag="run.started"):
    """A runner (`worker`) took the run over and started working."""

    worker: str = ""


class LlmDelta(Event, frozen=True, kw_only=True, tag="llm.delta"):
    """The next piece (`index`) of the answer as the model streams it."""

    index: int
    text: str


class RunCompleted(Event, frozen=True, kw_only=True, tag="run.completed"):
    """The run ended with an answer and the sources it was given."""

    answer: str
    duration_s: float = 0.0
    sources: list[RetrievedChunk] = msgspec.field(default_factory=list)


class RunFailed(Event, frozen=True, kw_only=True, tag="run.failed"):
    """The run ended without an answer; `reason` says why."""

    reason: str
    duration_s: float = 0.0


class RunSuperseded(Event, frozen=True, kw_only=True, tag="run.superseded"):
    """The run lost its lock (paused, partitioned, too slow) and stopped; a newer run or none
    owns the task now. Its late writes were refused by the fence."""

    reason: str


RunEvent = (
    RunRequested | RunStarted | RetrievalDone | LlmDelta | RunCompleted | RunFailed | RunSuperseded
)
