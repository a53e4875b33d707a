"""What the retention tests share: a stand-in archive, a canned run's events, report lines."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from libs.events import (
    AnyEvent,
    LockAcquired,
    LockReleased,
    RunCompleted,
    RunRequested,
    RunStarted,
    StoredEvent,
    TaskCreated,
)


class NoArchive:
    """An archive that holds nothing: partition logs and task streams must stay whole."""

    async def projected_positions(self) -> dict[int, str]:
        return {}

    async def last_archived(self, task_ids: Sequence[int]) -> dict[int, str]:
        return {}


def events_of(task_id: int, run_id: str) -> list[AnyEvent]:
    return [
        TaskCreated(task_id=task_id, title=f"task {task_id}"),
        LockAcquired(task_id=task_id, run_id=run_id, fence=1, ttl_ms=1000),
        RunRequested(task_id=task_id, run_id=run_id, fence=1, query="sky"),
        RunStarted(task_id=task_id, run_id=run_id, fence=1, worker="w"),
        RunCompleted(task_id=task_id, run_id=run_id, fence=1, answer="blue"),
        LockReleased(task_id=task_id, run_id=run_id, fence=1),
    ]


def trim_line(verb: str, removed: int, stream: str) -> str:
    """How `ragpoc trim` reports a stream it trimmed (or would)."""
    return f"{verb:<10} {removed:>6}  {stream}  (below "


def pairs(events: Sequence[StoredEvent]) -> list[tuple[str, AnyEvent]]:
    return [(stored.stream_id, stored.event) for stored in events]


async def run_in_thread(main: Any, argv: list[str]) -> int:
    code: int = await asyncio.to_thread(main, argv)
    return code
