"""The ingestor process: `POST /search` over the collection it owns, and the ingest consumer.

Qdrant local mode lets one process open its folder, so the consumer of the ingest-command
stream runs here, as a task started and stopped by the app's lifespan.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Annotated

import msgspec
import openai
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from libs.common import Settings
from libs.events import Keys, connect_redis
from services.ingestor.consumer import build_ingest_consumer, run_until_stopped
from services.ingestor.settings import IngestSettings
from services.ingestor.vectors import VectorIndex, open_index

__all__ = ["SHUTDOWN_GRACE_S", "IngestorContext", "SearchRequest", "create_app"]

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_S = 30.0
"""How long shutdown waits for the command in hand; after that it is left pending (and
retried by the next ingestor)."""


class SearchRequest(msgspec.Struct, forbid_unknown_fields=True):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=4_000)]
    k: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5


@dataclass(frozen=True)
class IngestorContext:
    index: VectorIndex
    consumer: asyncio.Task[None] | None  # None when no REDIS_URL is set


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status)


def _context(request: Request) -> IngestorContext:
    context: IngestorContext = request.state.ctx
    return context


async def health(request: Request) -> Response:
    task = _context(request).consumer
    consumer = "off" if task is None else ("stopped" if task.done() else "running")
    return JSONResponse({"status": "ok", "consumer": consumer})


async def search(request: Request) -> Response:
    index = _context(request).index
    try:
        body = msgspec.json.decode(await request.body(), type=SearchRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _error(422, f"invalid search request: {exc}")
    try:
        hits = await index.search(body.query, body.k)
    except openai.APIError as exc:
        log.warning("search.embedding_failed", error=str(exc))
        return _error(503, f"the embedding API failed, try again later: {exc}")
    return JSONResponse({"query": body.query, "hits": [msgspec.to_builtins(h) for h in hits]})


async def metrics(_request: Request) -> Response:
    """The process's metrics (its queue is on the gateways' /metrics, read from Redis)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings, options: IngestSettings | None = None) -> Starlette:
    """The ingestor app; `options` default to the RAGPOC_CHUNK_*/RAGPOC_EMBED_* variables."""
    ingest_options = options or IngestSettings.from_env()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, IngestorContext]]:
        index = await open_index(settings, ingest_options)
        redis = (
            connect_redis(settings.redis_url, cluster=settings.cluster_mode)
            if settings.redis_url
            else None
        )
        stop = asyncio.Event()
        task: asyncio.Task[None] | None = None
        if redis is None:
            log.warning("ingest.consumer_off", reason="REDIS_URL is not set: search only")
        else:
            keys = Keys(settings.namespace, settings.partitions)
            consumer = build_ingest_consumer(settings, redis, keys, index, ingest_options)
            task = asyncio.create_task(run_until_stopped(consumer, stop), name="ingest-consumer")
        try:
            yield {"ctx": IngestorContext(index=index, consumer=task)}
        finally:
            stop.set()
            if task is not None:
                try:
                    await asyncio.wait_for(task, SHUTDOWN_GRACE_S)
                except TimeoutError:
                    log.warning("ingest.consumer_stop_timed_out", after_s=SHUTDOWN_GRACE_S)
            if redis is not None:
                with suppress(Exception):
                    await redis.aclose()
            await index.close()

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/metrics", metrics),
            Route("/search", search, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
