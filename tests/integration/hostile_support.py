"""What the hostile-input tests share (no tests here): reading a 4xx's JSON error, opening a
URL that might be an event stream, sending bytes no HTTP client would, and checking that
nothing was written."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

from tests.integration.inprocess import InProcessStack

JSON = {"content-type": "application/json"}


def error_of(reply: httpx.Response, status: int | tuple[int, ...]) -> str:
    """The JSON error message of `reply`, once its status is checked."""
    expected = status if isinstance(status, tuple) else (status,)
    assert reply.status_code in expected, (reply.status_code, reply.text[:500])
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body: dict[str, Any] = reply.json()
    assert body["error"]["status"] == reply.status_code
    message: str = body["error"]["message"]
    return message


async def opening_of(
    client: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str] | Mapping[bytes, bytes] | None = None,
) -> httpx.Response:
    """The answer to GET `url` with its body read, unless it opens an event stream (a stream
    that should have been refused would never end): then the response, body unread."""
    async with client.stream("GET", url, headers=headers or {}) as reply:
        if not reply.headers.get("content-type", "").startswith("text/event-stream"):
            await reply.aread()
    return reply


async def no_tasks(stack: InProcessStack) -> bool:
    listed: list[object] = (await stack.client.get("/api/tasks")).json()["tasks"]
    return listed == []


async def queued_ingests(stack: InProcessStack) -> int:
    """How many ingest commands the gateway queued."""
    return int(await stack.store.redis.xlen(f"{stack.settings.namespace}:cmd:ingest"))


async def raw_post(stack: InProcessStack, path: str, headers: bytes, body: bytes) -> bytes:
    """The raw answer to a POST whose header lines are sent as given (an HTTP client would
    refuse to send a bad Content-Length)."""
    port = stack.settings.gateway_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n".encode()
            + headers
            + b"\r\n"
            + body
        )
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
