"""The ingestor's HTTP side: health and `POST /search` over the collection it owns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from libs.common import Settings
from services.ingestor.vectors import VectorIndex, open_index

__all__ = ["SearchRequest", "create_app"]


class SearchRequest(msgspec.Struct, forbid_unknown_fields=True):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=4_000)]
    k: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status)


async def health(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def search(request: Request) -> Response:
    index: VectorIndex = request.state.index
    try:
        body = msgspec.json.decode(await request.body(), type=SearchRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _error(422, f"invalid search request: {exc}")
    hits = await index.search(body.query, body.k)
    return JSONResponse({"query": body.query, "hits": [msgspec.to_builtins(h) for h in hits]})


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, VectorIndex]]:
        index = await open_index(settings)
        try:
            yield {"index": index}
        finally:
            await index.close()

    return Starlette(
        routes=[Route("/health", health), Route("/search", search, methods=["POST"])],
        lifespan=lifespan,
    )
