"""Read request bodies within a size limit and decode JSON ones into msgspec Structs, every
failure a 4xx with a JSON body (`services.gateway.validation` has the rules)."""

from __future__ import annotations

from typing import TypeVar

from starlette.requests import Request

from services.gateway.errors import ApiError
from services.gateway.validation import (
    bounded_int,
    convert_json,
    decode_json,
    require_json,
    shown,
)

__all__ = ["decode_body", "read_json", "read_limited"]

T = TypeVar("T")


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"request body is larger than {max_bytes} bytes", limit=max_bytes)


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The body, refused with a 413 as soon as it (or its declared length) passes `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        length = bounded_int(declared.strip(), max_bytes)
        if length is None:
            if not declared.strip().isascii() or not declared.strip().isdigit():
                raise ApiError(400, f"Content-Length must be a number of bytes: {shown(declared)}")
            raise _too_large(max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    return bytes(body)


async def read_json(request: Request, max_bytes: int) -> object:
    """The body decoded as JSON builtins: declared JSON (415), within `max_bytes` (413), within
    the nesting bound and valid (422)."""
    require_json(request)
    return decode_json(await read_limited(request, max_bytes))


async def decode_body(request: Request, type_: type[T], max_bytes: int) -> T:
    """The JSON body as `type_`: `read_json`'s checks, then the type's (422 naming the field),
    then no control character in any text and no integer beyond 64 bits (422)."""
    return convert_json(await read_json(request, max_bytes), type_)
