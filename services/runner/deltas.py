"""The answer's pieces as `llm.delta` events: the first at once, then at most one every
`interval_s`, holding every piece the model streamed meanwhile.

A model streams a token every 10-20 ms; one event per token costs an append (a fenced script in
Valkey), a projection step and a frame to every SSE client each time. Coalescing them to a
steady rate (20 a second by default: RAGPOC_DELTA_INTERVAL_MS) costs the reader nothing it can
see, and never delays the first token: the time to first token is what a user waits on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from libs.commandside.locks import Lease
from libs.events import EventStore, LlmDelta, RunAgent

__all__ = ["stream_deltas"]


async def stream_deltas(
    pieces: AsyncIterator[str],
    command: RunAgent,
    lease: Lease,
    store: EventStore,
    interval_s: float,
) -> str:
    """Append `pieces` (the model's text, as it streams) as `llm.delta` events under the run's
    lock, coalesced to one every `interval_s`; returns the whole answer. A failed append (the
    lock lost, Valkey away) stops the stream and raises."""
    parts: list[str] = []
    pending: list[str] = []
    index = 0
    last_flush = -float("inf")
    arrived = asyncio.Event()
    finished = False
    arrived_finish = asyncio.Event()  # the stream ended: flush now, wait no more

    async def flush() -> None:
        nonlocal index, last_flush
        text = "".join(pending)
        pending.clear()
        last_flush = time.monotonic()
        delta = LlmDelta(
            task_id=command.task_id,
            run_id=command.run_id,
            fence=lease.fence,
            index=index,
            text=text,
        )
        index += 1
        await store.append(delta, lock_token=lease.token)

    async def writer() -> None:
        while True:
            await arrived.wait()
            arrived.clear()
            if pending:
                wait = last_flush + interval_s - time.monotonic()
                if wait > 0 and not finished:
                    await _sleep_unless(arrived_finish, wait)
                await flush()
            if finished and not pending:
                return

    writing = asyncio.create_task(writer())
    try:
        async for text in pieces:
            if text:
                parts.append(text)
                pending.append(text)
                arrived.set()
            if writing.done():
                break  # the writer failed: awaiting it below raises its error
        finished = True
        arrived_finish.set()
        arrived.set()
        await writing
    finally:
        writing.cancel()  # the model failed, or the run was cancelled: that error goes on
    return "".join(parts)


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `event` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
