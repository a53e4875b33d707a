"""Baseline for `bench/bench_sse.py` at sizes where a blocked XREAD per client is impractical:
the straightforward SSE server (one reader, an asyncio.Queue per client, one write per client per
event), so the gateway's cost or saving shows as a ratio against it.

One XREAD BLOCK loop follows one stream (BASELINE_STREAM, from its tail at start) and puts each
entry's frame, built once, into every subscriber's queue; `GET /events` sends `event: ready`
once subscribed, then those frames as they come. No replay, no database, no heartbeat, no
overflow handling. `GET /health` answers 200 for start-up polling.

    REDIS_URL=redis://127.0.0.1:6379/0 BASELINE_STREAM=s .venv/bin/python -m uvicorn \
        bench.baseline_sse_app:app --port 8009 --log-level warning
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["app"]

subscribers: set[asyncio.Queue[bytes]] = set()


async def follow(client: aioredis.Redis, stream: str) -> None:
    last = "$"
    while True:
        reply = await client.xread({stream: last}, block=1000, count=100)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id
                data = fields["data"]
                kind = json.loads(data)["type"]
                frame = f"id: {entry_id}\nevent: {kind}\ndata: {data}\n\n".encode()
                for queue in subscribers:
                    queue.put_nowait(frame)


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    client = aioredis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    reader = asyncio.create_task(follow(client, os.environ["BASELINE_STREAM"]))
    try:
        yield
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await client.aclose()


async def frames() -> AsyncIterator[bytes]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    subscribers.add(queue)
    try:
        yield b"event: ready\ndata: {}\n\n"
        while True:
            yield await queue.get()
    finally:
        subscribers.discard(queue)


async def events(_request: Request) -> Response:
    return StreamingResponse(frames(), media_type="text/event-stream")


async def health(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[Route("/events", events), Route("/health", health)],
    lifespan=lifespan,
)
