"""The entries a consumer is handling right now, each in its own task, at most `slots` at once.

A consumer reads only as many entries as it has free slots (backpressure: what it cannot start
stays in the stream for another member), waits for a slot when all are taken, and on stop lets
the entries in hand finish within a bound; what is still running then is cancelled and left
pending, to be reclaimed by a live member once idle."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

__all__ = ["InHand"]

log = structlog.get_logger(__name__)


@dataclass
class InHand:
    slots: int = 1
    # (stream, entry id) -> the task handling it (ids of different streams may be equal)
    _tasks: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return max(self.slots - len(self._tasks), 0)

    @property
    def ids(self) -> list[str]:
        """The entry ids in hand."""
        return [entry_id for _stream, entry_id in self._tasks]

    def __contains__(self, entry: object) -> bool:
        """Whether (stream, entry id) is in hand."""
        return entry in self._tasks

    def start(
        self, stream: str, entry_id: str, handling: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        key = (stream, entry_id)
        task = asyncio.create_task(handling, name=f"entry-{entry_id}")
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))
        return task

    async def wait_for_slot(self, stop: asyncio.Event) -> None:
        """Until a slot is free or `stop` is set."""
        while not self.free and not stop.is_set():
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([*self._tasks.values(), stopping], return_when="FIRST_COMPLETED")
            finally:
                stopping.cancel()

    async def drain(self, within_s: float) -> None:
        """Let the entries in hand finish for up to `within_s`; cancel what is still running
        (its entry stays pending, for another member to reclaim)."""
        if not self._tasks:
            return
        tasks = list(self._tasks.values())
        _done, running = await asyncio.wait(tasks, timeout=within_s)
        for task in running:
            task.cancel()
        if running:
            log.warning("consumer.drain_cut_short", left_pending=len(running), after_s=within_s)
            await asyncio.gather(*running, return_exceptions=True)
