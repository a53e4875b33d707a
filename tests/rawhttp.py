"""A minimal HTTP/1.1 client on asyncio streams, for bursts of truly concurrent requests.

httpx needs about 3 s to push 200 concurrent requests through its pool on this machine (the
servers answer them in under 0.2 s), which would spread a "burst" over seconds. One connection
per request, `Connection: close`, nothing else: enough for tests and benchmarks on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["RawResponse", "request"]


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


async def request(method: str, url: str, body: Any = None, limit_s: float = 60) -> RawResponse:
    parts = urlsplit(url)
    payload = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    async with asyncio.timeout(limit_s):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        try:
            writer.write(head + payload)
            raw = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
    seconds = time.perf_counter() - started
    header, _, content = raw.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in header.lower():
        content = _unchunk(content)
    return RawResponse(status=status, body=content, seconds=seconds)


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)
