"""What the ingest tests share (no tests here): mockai, the ingestor and the gateway served by
uvicorn in the test's event loop on free ports, and reading the docs stream without sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import msgspec
import redis.asyncio as aioredis
from qdrant_client import AsyncQdrantClient
from starlette.applications import Starlette
from starlette.routing import Route

from libs.common import Settings
from libs.events import DocEvent, DocumentToIngest, IngestDocuments, Keys, decode_doc_event, encode
from libs.events.store import Entries
from services.gateway.app import create_app as gateway_app
from services.gateway.ingest_api import ingest, search
from services.ingestor.app import create_app as ingestor_app
from services.ingestor.settings import IngestSettings
from services.ingestor.vectors import COLLECTION
from services.mockai import create_app as mockai_app
from tests.conftest import free_port
from tests.integration.inprocess import serving

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

TEST_OPTIONS = IngestSettings(
    chunk_size=200, chunk_overlap=40, embed_batch_size=8, embed_timeout_s=10, embed_max_retries=0
)


def ingest_settings(
    redis_url: str, keys: Keys, data_dir: Path, openai_base_url: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "namespace": keys.namespace,
        "partitions": keys.partitions,
        "data_dir": data_dir,
        "database_url": f"sqlite+aiosqlite:///{data_dir / 'readmodels.db'}",
        "openai_base_url": openai_base_url,
        "gateway_port": free_port(),
        "ingestor_port": free_port(),
        "consumer_block_ms": 100,
    }
    return Settings(**(values | overrides))


def failing_embeddings(app: Starlette, failures: dict[str, int]) -> Any:
    """mockai, except that an embeddings request whose body contains a marker of `failures`
    is answered with that status and an OpenAI-shaped error."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/embeddings":
            await app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status = next((code for marker, code in failures.items() if marker in body.decode()), 0)
        if not status:
            replayed = False

            async def replay() -> MutableMapping[str, Any]:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await app(scope, replay, send)
            return
        error = {"error": {"message": "injected by the test", "type": "test", "code": None}}
        payload = msgspec.json.encode(error)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return wrapped


@asynccontextmanager
async def running_mockai(failures: dict[str, int] | None = None) -> AsyncIterator[str]:
    """mockai on a free port; yields its OpenAI base URL."""
    port = free_port()
    app = failing_embeddings(mockai_app(), failures) if failures else mockai_app()
    async with serving(app, port):
        yield f"http://127.0.0.1:{port}/v1"


@asynccontextmanager
async def running_ingestor(
    settings: Settings, options: IngestSettings = TEST_OPTIONS
) -> AsyncIterator[httpx.AsyncClient]:
    """The ingestor app (its consumer task included); yields a client for its HTTP API."""
    async with (
        serving(ingestor_app(settings, options), settings.ingestor_port),
        httpx.AsyncClient(base_url=settings.ingestor_url, timeout=10) as client,
    ):
        yield client


def gateway_with_ingest_routes(settings: Settings) -> Starlette:
    """The gateway, with /api/ingest and /api/search added unless app.py has them already."""
    app = gateway_app(settings)
    present = {getattr(route, "path", "") for route in app.router.routes}
    for path, endpoint in (("/api/ingest", ingest), ("/api/search", search)):
        if path not in present:
            app.router.routes.append(Route(path, endpoint, methods=["POST"]))
    return app


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serving(gateway_with_ingest_routes(settings), settings.gateway_port),
        httpx.AsyncClient(base_url=settings.gateway_url, timeout=60) as client,
    ):
        yield client


async def send_ingest(
    redis: aioredis.Redis, keys: Keys, batch_id: str, *documents: DocumentToIngest
) -> str:
    """XADD an ingest command, as the gateway does."""
    command = IngestDocuments(batch_id=batch_id, documents=list(documents))
    entry_id = await redis.xadd(keys.ingest_commands, {"type": "ingest", "data": encode(command)})
    return str(entry_id)


async def next_doc_events(
    redis: aioredis.Redis, keys: Keys, count: int, after: str = "0-0", timeout_s: float = 30.0
) -> list[DocEvent]:
    """The first `count` doc events after `after`, waiting for them with XREAD BLOCK (in
    1-second reads: redis-py's socket timeout is 5 s), no sleeps."""
    from tests.eventually import eventually

    events: list[DocEvent] = []

    async def read_enough() -> bool:
        nonlocal after
        reply = await redis.xread({keys.doc_events: after}, block=1_000, count=count)
        for _stream, entries in cast(list[tuple[str, Entries]], reply or []):
            for entry_id, fields in entries:
                after = entry_id
                events.append(decode_doc_event(fields["data"]))
        return len(events) >= count

    await eventually(
        read_enough,
        within=timeout_s,
        interval=0,  # each read blocks until an event comes (or for a second)
        message=lambda: f"only {len(events)} of {count} doc events came: {events}",
    )
    return events


async def all_doc_events(redis: aioredis.Redis, keys: Keys) -> list[DocEvent]:
    entries = cast(Entries, await redis.xrange(keys.doc_events))
    return [decode_doc_event(fields["data"]) for _id, fields in entries]


async def stored_points(data_dir: Path) -> list[dict[str, Any]]:
    """Every point's payload in the ingestor's Qdrant folder (open it once the ingestor
    stopped: local mode lets one client in at a time)."""
    qdrant = AsyncQdrantClient(path=str(data_dir / "qdrant"))
    try:
        points, _next = await qdrant.scroll(COLLECTION, limit=10_000, with_payload=True)
        return [dict(point.payload or {}) for point in points]
    finally:
        await qdrant.close()
