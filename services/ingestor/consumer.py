"""The ingest consumer: a member of the "ingestors" group on the ingest-command stream.

For each `IngestDocuments` command it indexes the documents (`pipeline.index_documents`) and
appends one `doc.ingested` or `doc.failed` per document to the docs stream, as each finishes.
Transient errors are raised, so the entry stays pending and is retried, then dead-lettered; a
dead-lettered command reports `doc.failed` for every document it had not reported yet.
Redelivery is harmless: points have deterministic ids, and documents a previous delivery of the
same entry already reported are skipped.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import cast

import redis.asyncio as aioredis
import structlog

from libs.common import Settings
from libs.common.backoff import Backoff, pause
from libs.events import (
    INGESTORS_GROUP,
    ConsumerOptions,
    DocEvent,
    DocFailed,
    DocIngested,
    DocumentToIngest,
    EventDecodeError,
    GroupConsumer,
    IngestDocuments,
    Keys,
    decode_command,
    decode_doc_event,
    encode,
)
from libs.events.store import Entries
from libs.events.workers import WorkerRegistry
from services.ingestor.pipeline import Outcome, Rejected, index_documents
from services.ingestor.settings import IngestSettings
from services.ingestor.vectors import VectorIndex

__all__ = [
    "append_doc_event",
    "build_ingest_consumer",
    "outcome_event",
    "reported_documents",
    "run_until_stopped",
]

log = structlog.get_logger(__name__)

_PAGE = 500


async def append_doc_event(redis: aioredis.Redis, keys: Keys, event: DocEvent) -> str:
    tag = cast(str, type(event).__struct_config__.tag)
    entry_id = await redis.xadd(keys.doc_events, {"type": tag, "data": encode(event)})
    return str(entry_id)


async def reported_documents(
    redis: aioredis.Redis, keys: Keys, batch_id: str, since: str
) -> set[str]:
    """Documents of `batch_id` with a doc.ingested/doc.failed in the docs stream from `since`
    (the command's entry id: its documents' events can only come after it)."""
    reported: set[str] = set()
    start = since
    while True:
        entries = cast(Entries, await redis.xrange(keys.doc_events, min=start, count=_PAGE))
        for _entry_id, fields in entries:
            try:
                event = decode_doc_event(fields.get("data", ""))
            except EventDecodeError:
                continue
            if event.batch_id == batch_id:
                reported.add(event.doc_id)
        if len(entries) < _PAGE:
            return reported
        start = "(" + entries[-1][0]


def outcome_event(command: IngestDocuments, doc: DocumentToIngest, outcome: Outcome) -> DocEvent:
    """The doc.ingested / doc.failed announcing a document's outcome (logged as it is made)."""
    if isinstance(outcome, Rejected):
        log.warning("doc.failed", doc_id=doc.doc_id, reason=outcome.reason)
        return DocFailed(doc_id=doc.doc_id, batch_id=command.batch_id, reason=outcome.reason)
    duration_s = round(outcome.duration_s, 4)
    log.info(
        "doc.ingested",
        doc_id=doc.doc_id,
        chunks=outcome.chunks,
        dims=outcome.dims,
        duration_s=duration_s,
        source=doc.source,
    )
    return DocIngested(
        doc_id=doc.doc_id,
        batch_id=command.batch_id,
        title=doc.title,
        source=doc.source,
        chunks=outcome.chunks,
        dims=outcome.dims,
        duration_s=duration_s,
        metadata=doc.metadata,
    )


def build_ingest_consumer(
    settings: Settings,
    redis: aioredis.Redis,
    keys: Keys,
    index: VectorIndex,
    options: IngestSettings,
) -> GroupConsumer:
    stream = keys.ingest_commands

    async def delivered_before(entry_id: str) -> bool:
        pending = await redis.xpending_range(
            stream, INGESTORS_GROUP, min=entry_id, max=entry_id, count=1
        )
        return bool(pending) and int(pending[0]["times_delivered"]) > 1

    async def handle(entry_id: str, fields: dict[str, str]) -> None:
        try:
            command = decode_command(fields.get("data", ""), IngestDocuments)
        except EventDecodeError as exc:  # can never work: straight to the dead letters
            dead = {**fields, "source_id": entry_id, "group": INGESTORS_GROUP, "reason": str(exc)}
            await redis.xadd(keys.dead_letters(stream), dead)  # type: ignore[arg-type]
            log.error("ingest.undecodable_command", reason=str(exc))
            return
        with structlog.contextvars.bound_contextvars(batch_id=command.batch_id):
            skip: set[str] = set()
            if await delivered_before(entry_id):
                skip = await reported_documents(redis, keys, command.batch_id, since=entry_id)
                log.info("ingest.redelivered", already_reported=len(skip))
            todo = [doc for doc in command.documents if doc.doc_id not in skip]
            async with aclosing(index_documents(index, todo, options)) as outcomes:
                async for doc, outcome in outcomes:
                    await append_doc_event(redis, keys, outcome_event(command, doc, outcome))

    async def dead_lettered(entry_id: str, fields: dict[str, str], reason: str) -> None:
        command = decode_command(fields["data"], IngestDocuments)
        reported = await reported_documents(redis, keys, command.batch_id, since=entry_id)
        for doc in command.documents:
            if doc.doc_id in reported:
                continue
            failed = DocFailed(
                doc_id=doc.doc_id,
                batch_id=command.batch_id,
                reason=f"gave up after repeated failures: {reason}",
            )
            await append_doc_event(redis, keys, failed)
            log.error("doc.failed", doc_id=doc.doc_id, batch_id=command.batch_id, reason=reason)

    return GroupConsumer(
        redis=redis,
        keys=keys,
        stream=stream,
        group=INGESTORS_GROUP,
        handler=handle,
        options=ConsumerOptions.from_settings(settings),
        on_dead_letter=dead_lettered,
        registry=WorkerRegistry(redis, keys.namespace),
        service="ingestor",
    )


async def run_until_stopped(consumer: GroupConsumer, stop: asyncio.Event) -> None:
    """Run the consumer until `stop` is set. The consumer rides out Redis outages by itself;
    anything else that ends it (a bug, a failing dead-letter hook) is logged and the consumer
    started again after a capped, jittered backoff, so the ingestor keeps consuming."""
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    while not stop.is_set():
        try:
            await consumer.run(stop)
        except Exception:
            delay = backoff.next_delay()
            log.exception("ingest.consumer_crashed", retry_in_s=round(delay, 3))
            await pause(stop, delay)
