"""What the clients of a fault run saw, recorded as they saw it: the history checker compares it
with the event log."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Follow", "History", "Ingest", "Request", "RunTry"]


@dataclass(frozen=True, slots=True)
class RunTry:
    """One HTTP attempt of a POST /run-agents (`status` None: no answer, `error` says why)."""

    task_id: int
    key: str
    at: float
    status: int | None
    run_id: str = ""
    error: str = ""


@dataclass
class Request:
    """A client's request to run a task, with every attempt it took under one Idempotency-Key."""

    task_id: int
    key: str
    tries: list[RunTry] = field(default_factory=list)

    @property
    def accepted(self) -> list[RunTry]:
        return [t for t in self.tries if t.status in (200, 202)]

    @property
    def outcome(self) -> str:
        """accepted, conflict (409), refused (another 4xx), or unsettled (no answer at all)."""
        if self.accepted:
            return "accepted"
        final = self.tries[-1].status if self.tries else None
        if final == 409:
            return "conflict"
        return "refused" if final is not None and final < 500 else "unsettled"


@dataclass
class Follow:
    """An SSE follower of one task: the ids of the events it got, in order, across reconnects."""

    task_id: int
    ids: list[str] = field(default_factory=list)
    connects: int = 0


@dataclass(frozen=True, slots=True)
class Ingest:
    batch_id: str
    document_ids: tuple[str, ...]


@dataclass
class History:
    requests: list[Request] = field(default_factory=list)
    follows: list[Follow] = field(default_factory=list)
    ingests: list[Ingest] = field(default_factory=list)
    poison_ids: list[str] = field(default_factory=list)
