"""Reading Server-Sent Events in tests: the frames of a response, parsed by the spec's rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

__all__ = ["sse_frames"]


async def sse_frames(
    client: httpx.AsyncClient,
    url: str,
    *,
    count: int | None = None,
    until: Callable[[dict[str, str]], bool] | None = None,
    last_id: str = "",
    connected: asyncio.Event | None = None,
    received: asyncio.Event | None = None,
) -> list[dict[str, str]]:
    """The event frames (fields `id`, `event`, `data`) of GET `url`, sent with `last_id` as
    Last-Event-ID, until `count` frames, a frame `until` accepts, or the end of the stream.
    `connected` is set once the response has started (the feed's position is fixed by then),
    `received` once the first event frame has arrived."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    frames: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async with client.stream("GET", url, headers=headers) as response:
        if connected is not None:
            connected.set()
        async for line in response.aiter_lines():
            if line:
                field, _, value = line.partition(": ")
                current[field] = value
                continue
            if "event" in current:
                frames.append(current)
                if received is not None:
                    received.set()
                if len(frames) == count or (until is not None and until(current)):
                    return frames
            current = {}
    return frames
