"""Decode request bodies into msgspec Structs, with a size limit and readable 4xx errors."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from services.gateway.errors import ApiError

__all__ = ["decode_body"]

T = TypeVar("T")


async def read_limited(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"request body is larger than {max_bytes} bytes", limit=max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, f"request body is larger than {max_bytes} bytes", limit=max_bytes)
    return bytes(body)


async def decode_body(request: Request, type_: type[T], max_bytes: int) -> T:
    body = await read_limited(request, max_bytes)
    if not body.strip():
        raise ApiError(422, "request body is empty: send a JSON object")
    try:
        value: T = msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise ApiError(422, f"invalid request body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ApiError(422, f"request body is not valid JSON: {exc}") from exc
    return value
