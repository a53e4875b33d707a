"""`POST /api/ingest` (queue documents for the ingestor, optionally wait until searchable) and
`POST /api/search` (proxied to the ingestor)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from typing import Annotated, Any, cast

import httpx
import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from libs.events import (
    DocFailed,
    DocIngested,
    DocumentToIngest,
    EventDecodeError,
    IngestDocuments,
    decode_doc_event,
    encode,
)
from libs.events.store import Entries
from services.gateway.bodies import decode_body, read_json
from services.gateway.context import GatewayContext, context_of
from services.gateway.errors import ApiError
from services.gateway.validation import convert_json, query_seconds

__all__ = ["MAX_BATCH_DOCUMENTS", "MAX_WAIT_S", "document_id", "ingest", "search"]

log = structlog.get_logger(__name__)

MAX_BATCH_DOCUMENTS = 100
MAX_WAIT_S = 120.0
SEARCH_TIMEOUT_S = 30.0
READ_SLICE_MS = 1_000
"""Longest single XREAD BLOCK of `?wait`: well under any client's socket timeout."""


# Text the ingestor's cleaning leaves nothing of: whitespace (page breaks among it), control
# characters (C1 included) and the byte-order marks it drops.
_BLANK = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ufeff\ufffe\uffff]*")


class DocumentIn(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    title: Annotated[str, msgspec.Meta(max_length=500)] = ""
    source: Annotated[str, msgspec.Meta(max_length=2_000)] = ""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    documents: list[DocumentIn]


class SearchIn(msgspec.Struct, forbid_unknown_fields=True):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=4_000)]
    k: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5


def document_id(text: str, source: str) -> str:
    """The id of a document: from its content, so ingesting it again changes nothing."""
    return hashlib.sha256(f"{text}\0{source}".encode()).hexdigest()[:32]


def _documents(raw: object) -> list[DocumentIn]:
    """One document `{text, ...}` or a batch `{documents: [...]}`, every document checked."""
    batch = isinstance(raw, dict) and "documents" in raw
    documents = (
        convert_json(raw, BatchIn, " for a batch {documents: [...]}").documents
        if batch
        else [convert_json(raw, DocumentIn, " for a document {text, title?, source?, metadata?}")]
    )
    if not documents:
        raise ApiError(422, "documents is empty: send at least one document")
    if len(documents) > MAX_BATCH_DOCUMENTS:
        raise ApiError(
            422,
            f"a batch holds at most {MAX_BATCH_DOCUMENTS} documents, got {len(documents)}: "
            "split it into several requests",
        )
    for position, doc in enumerate(documents):
        if _BLANK.fullmatch(doc.text):
            where = f"documents[{position}].text" if batch else "text"
            raise ApiError(422, f"{where} is blank: a document needs some text")
    return documents


async def ingest(request: Request) -> Response:
    ctx = context_of(request)
    wait = query_seconds(request, "wait", MAX_WAIT_S)
    documents = _documents(await read_json(request, ctx.settings.max_body_bytes))
    ids, command = _command(documents)
    unique = {doc.doc_id for doc in command.documents}
    with structlog.contextvars.bound_contextvars(batch_id=command.batch_id):
        after = await _last_doc_event(ctx) if wait is not None else "0-0"
        await ctx.redis.xadd(ctx.keys.ingest_commands, {"type": "ingest", "data": encode(command)})
        log.info("ingest.queued", documents=len(unique), wait_s=wait)
        body: dict[str, Any] = {"batch_id": command.batch_id, "document_ids": ids}
        if wait is None:
            return JSONResponse({**body, "status": "queued"}, status_code=202)
        outcomes = await _await_outcomes(ctx, command.batch_id, unique, after, wait)
    documents_out = [
        outcomes.get(doc_id, {"doc_id": doc_id, "status": "pending"}) for doc_id in ids
    ]
    if len(outcomes) == len(unique):
        return JSONResponse({**body, "status": "done", "documents": documents_out})
    message = (
        f"still indexing after {wait:g} s: {len(unique) - len(outcomes)} of {len(unique)} "
        "documents are not searchable yet; they will be, ask again with a longer wait"
    )
    return JSONResponse(
        {**body, "status": "pending", "message": message, "documents": documents_out},
        status_code=202,
    )


def _command(documents: list[DocumentIn]) -> tuple[list[str], IngestDocuments]:
    """Each document's id, and the command indexing each content once."""
    ids = [document_id(doc.text, doc.source) for doc in documents]
    unique: dict[str, DocumentToIngest] = {}
    for doc_id, doc in zip(ids, documents, strict=True):
        unique.setdefault(
            doc_id,
            DocumentToIngest(
                doc_id=doc_id,
                text=doc.text,
                title=doc.title,
                source=doc.source,
                metadata=doc.metadata,
            ),
        )
    return ids, IngestDocuments(batch_id=uuid.uuid4().hex, documents=list(unique.values()))


async def _last_doc_event(ctx: GatewayContext) -> str:
    """The docs stream's last entry id (`0-0` if empty): only later events can be ours."""
    last = cast(Entries, await ctx.redis.xrevrange(ctx.keys.doc_events, count=1))
    return last[0][0] if last else "0-0"


async def _await_outcomes(
    ctx: GatewayContext, batch_id: str, doc_ids: set[str], after: str, wait: float
) -> dict[str, dict[str, Any]]:
    """Follow the docs stream until every document has an outcome or `wait` runs out. A
    doc.ingested of the same content from any batch means searchable; a doc.failed counts only
    from this batch."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    outcomes: dict[str, dict[str, Any]] = {}
    while len(outcomes) < len(doc_ids):
        remaining_ms = int((deadline - loop.time()) * 1000)
        if remaining_ms <= 0:
            break
        block_ms = min(remaining_ms, READ_SLICE_MS)
        reply = await ctx.follower.redis.xread(  # the client meant for blocking reads
            {ctx.keys.doc_events: after}, block=block_ms, count=500
        )
        for _stream, entries in cast(list[tuple[str, Entries]], reply or []):
            for entry_id, fields in entries:
                after = entry_id
                try:
                    event = decode_doc_event(fields.get("data", ""))
                except EventDecodeError:
                    continue
                if event.doc_id not in doc_ids or event.doc_id in outcomes:
                    continue
                if isinstance(event, DocIngested):
                    outcomes[event.doc_id] = {
                        "doc_id": event.doc_id,
                        "status": "ingested",
                        "chunks": event.chunks,
                    }
                elif isinstance(event, DocFailed) and event.batch_id == batch_id:
                    outcomes[event.doc_id] = {
                        "doc_id": event.doc_id,
                        "status": "failed",
                        "reason": event.reason,
                    }
    return outcomes


async def search(request: Request) -> Response:
    ctx = context_of(request)
    body = await decode_body(request, SearchIn, ctx.settings.max_body_bytes)
    url = f"{ctx.settings.ingestor_url}/search"
    try:
        async with httpx.AsyncClient(timeout=SEARCH_TIMEOUT_S) as client:
            reply = await client.post(url, json={"query": body.query, "k": body.k})
    except httpx.TransportError as exc:
        log.warning("search.ingestor_unreachable", url=url, error=repr(exc))
        raise ApiError(
            503,
            f"the ingestor at {ctx.settings.ingestor_url} is not reachable ({type(exc).__name__}):"
            " start it (`ragpoc up` or `ragpoc ingestor`) or set INGESTOR_URL",
            ingestor_url=ctx.settings.ingestor_url,
        ) from exc
    if reply.status_code != 200:
        status = reply.status_code if reply.status_code < 500 else 502
        raise ApiError(status, f"the ingestor answered {reply.status_code}: {_message(reply)}")
    return Response(reply.content, media_type="application/json")


def _message(reply: httpx.Response) -> str:
    try:
        return str(reply.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return reply.text[:500]
