"""Baseline for `bench/bench_run_admission.py`: a bare Starlette app doing one XADD per request.

`POST /xadd` appends the raw request body as one field of one entry (exactly one `XADD`) and
answers 202 `{"id": <entry id>}`; `POST /xadd-durable` does the same and answers once Valkey
has the entry on disk (`WAITAOF 1 0` after the XADD, on the same connection: what the
gateway's durable accept does, so 202s are compared at the same durability); `GET /health`
answers 200 for start-up polling. The Redis client is built in the lifespan from REDIS_URL
(decode_responses=True); the stream is BASELINE_STREAM.

Serve it like the gateway, in its own process:
    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python -m uvicorn bench.baseline_xadd_app:app \
        --port 8009 --log-level warning
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["app"]


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, object]]:
    client = aioredis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    stream = os.environ.get("BASELINE_STREAM", "bench:baseline:xadd")
    try:
        yield {"redis": client, "stream": stream}
    finally:
        await client.aclose()


async def xadd(request: Request) -> Response:
    client = cast(aioredis.Redis, request.state.redis)
    body = await request.body()
    entry_id = await client.xadd(request.state.stream, {"data": body.decode()})
    return JSONResponse({"id": entry_id}, status_code=202)


async def xadd_durable(request: Request) -> Response:
    client = cast(aioredis.Redis, request.state.redis)
    body = await request.body()
    async with client.pipeline(transaction=False) as pipe:
        pipe.xadd(request.state.stream, {"data": body.decode()})
        pipe.waitaof(1, 0, 5_000)
        entry_id, (local, _replicas) = await pipe.execute()
    if local != 1:
        return JSONResponse({"error": "the entry is not on disk"}, status_code=503)
    return JSONResponse({"id": entry_id}, status_code=202)


async def health(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/xadd", xadd, methods=["POST"]),
        Route("/xadd-durable", xadd_durable, methods=["POST"]),
        Route("/health", health),
    ],
    lifespan=lifespan,
)
