"""The envelope every event shares: ids, fencing token, time, schema version."""

from __future__ import annotations

import time

import msgspec

__all__ = ["Event", "now"]


def now() -> float:
    return time.time()


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event. Events are named in the past tense and only ever grow fields
    with defaults, so an event written by an older schema still decodes."""

    task_id: int
    run_id: str = ""
    fence: int = 0
    at: float = msgspec.field(default_factory=now)
    v: int = 1
