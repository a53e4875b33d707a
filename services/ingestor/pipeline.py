"""Index documents: chunk, embed in batches, upsert; one outcome per document.

Small documents share embedding requests and writes: consecutive documents are grouped while
their chunks fit in one batch (`embed_batch_size`); a larger document is embedded in several
requests of its own. If the embedding API rejects a group's input (4xx: too long, invalid),
each document of the group is tried alone, so only the culprit fails. Errors that may pass
(connection, timeout, rate limit, 5xx) and storage errors are raised: the consumer loop
retries the command.

The stages overlap: a task chunks the documents ahead of the writes and starts each group's
embedding request (and the lookup of its stored versions) as soon as the group is planned,
so while one group is written the embedding API is already computing the next ones, instead
of being asked only once the write is done. Qdrant local mode writes without ever yielding
to the event loop, so what overlaps a local write is the API's side of the requests already
sent; with a Qdrant server the loop runs everything else meanwhile. The queue between the
two bounds how far ahead the task runs, so memory holds a few groups' vectors however large
the ingest. Groups are written, and their outcomes yielded, in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass

import openai

from libs.events import DocumentToIngest
from services.ingestor.chunking import chunk_text
from services.ingestor.errors import IngestError, UnusableDocument
from services.ingestor.settings import IngestSettings
from services.ingestor.vectors import EmbeddedDocument, VectorIndex

__all__ = ["EMBED_AHEAD", "Indexed", "Outcome", "Rejected", "index_documents"]

REJECTING_STATUSES = frozenset({400, 413, 422})
"""Answers of the embedding API that say the input itself is wrong: retrying cannot help."""

EMBED_AHEAD = 2
"""Groups waiting, embedded or being embedded, for the write in progress (the planning task
holds one more, waiting for room): one hides an embedding request as slow as a write, the
second absorbs an occasional slower one; more would only hold more vectors."""


@dataclass(frozen=True, slots=True)
class Indexed:
    doc_id: str
    chunks: int
    dims: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class Rejected:
    doc_id: str
    reason: str


Outcome = Indexed | Rejected


@dataclass(frozen=True, slots=True)
class _Planned:
    doc: DocumentToIngest
    chunks: list[str]


@dataclass(frozen=True, slots=True)
class _Prepared:
    vectors: list[list[float]]
    stored: dict[str, int] | None  # stored versions' chunk counts; None: not looked up


@dataclass(frozen=True, slots=True)
class _Group:
    """Documents embedded and written together; `prepared` embeds them from `started` on."""

    planned: list[_Planned]
    started: float
    prepared: asyncio.Task[_Prepared]


_Step = _Group | tuple[DocumentToIngest, Rejected]
_END = None


async def index_documents(
    index: VectorIndex, documents: Sequence[DocumentToIngest], options: IngestSettings
) -> AsyncGenerator[tuple[DocumentToIngest, Outcome], None]:
    """Index each document; yields its outcome as soon as it is known. Documents of one
    group come in order; a blank document may come before the group in progress."""
    steps: asyncio.Queue[_Step | None] = asyncio.Queue(maxsize=EMBED_AHEAD)
    producer = asyncio.create_task(_produce(index, documents, options, steps))
    written: dict[str, int] = {}  # doc_id -> chunks this ingest stored, for later lookups
    try:
        while (step := await steps.get()) is not _END:
            if isinstance(step, tuple):
                yield step
                continue
            async with aclosing(_finish(index, step, written, options)) as outcomes:
                async for outcome in outcomes:
                    yield outcome
        await producer  # its error, if it ended by one
    finally:
        producer.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await producer
        await _abandon(steps)


async def _produce(
    index: VectorIndex,
    documents: Sequence[DocumentToIngest],
    options: IngestSettings,
    steps: asyncio.Queue[_Step | None],
) -> None:
    """Chunk the documents, start each group's embedding and queue it; the queue's bound
    keeps this at most `EMBED_AHEAD` groups ahead of the writes. Ends the queue with `_END`
    unless cancelled (then nobody reads it any more)."""
    try:
        for step in _plan(documents, options):
            if isinstance(step, tuple):
                await steps.put(step)
                continue
            prepared = asyncio.create_task(_prepare(index, step, options))
            try:
                await steps.put(_Group(step, time.perf_counter(), prepared))
            except asyncio.CancelledError:
                prepared.cancel()
                raise
    except Exception:
        await steps.put(_END)  # the reader then awaits this task, which raises the error
        raise
    await steps.put(_END)


def _plan(
    documents: Sequence[DocumentToIngest], options: IngestSettings
) -> Iterator[list[_Planned] | tuple[DocumentToIngest, Rejected]]:
    """Groups of documents whose chunks fit in one batch, and blank documents' rejections."""
    group: list[_Planned] = []
    for doc in documents:
        chunks = chunk_text(doc.text, size=options.chunk_size, overlap=options.chunk_overlap)
        if not chunks:
            yield doc, Rejected(doc.doc_id, "no text left after cleaning: the text is blank")
            continue
        if group and sum(len(p.chunks) for p in group) + len(chunks) > options.embed_batch_size:
            yield group
            group = []
        group.append(_Planned(doc, chunks))
    if group:
        yield group


async def _finish(
    index: VectorIndex, group: _Group, written: dict[str, int], options: IngestSettings
) -> AsyncGenerator[tuple[DocumentToIngest, Outcome], None]:
    """Write a group once embedded; if the API rejected its input, try each document alone."""
    try:
        prepared = await group.prepared
    except UnusableDocument as exc:
        if len(group.planned) == 1:
            yield group.planned[0].doc, Rejected(group.planned[0].doc.doc_id, str(exc))
            return
        for planned in group.planned:  # find which document the API refuses
            prepared_alone = asyncio.create_task(_prepare(index, [planned], options))
            alone = _Group([planned], time.perf_counter(), prepared_alone)
            async with aclosing(_finish(index, alone, written, options)) as outcomes:
                async for outcome in outcomes:
                    yield outcome
        return
    embedded: list[EmbeddedDocument] = []
    offset = 0
    for planned in group.planned:
        doc_vectors = prepared.vectors[offset : offset + len(planned.chunks)]
        embedded.append(EmbeddedDocument(planned.doc, planned.chunks, doc_vectors))
        offset += len(planned.chunks)
    stored = None
    if prepared.stored is not None:  # looked up before this ingest's latest writes: amend
        ids = (p.doc.doc_id for p in group.planned)
        stored = prepared.stored | {doc_id: written[doc_id] for doc_id in ids if doc_id in written}
    await index.write(embedded, stored)
    elapsed = time.perf_counter() - group.started
    for planned in group.planned:
        written[planned.doc.doc_id] = len(planned.chunks)
    for planned in group.planned:
        yield planned.doc, Indexed(planned.doc.doc_id, len(planned.chunks), index.dims, elapsed)


async def _prepare(index: VectorIndex, group: list[_Planned], options: IngestSettings) -> _Prepared:
    """The group's vectors and, when the collection exists, its stored versions' chunk
    counts, both asked for at once."""
    texts = [text for planned in group for text in planned.chunks]
    if not index.dims:  # no collection yet: the write creates it, then looks up
        return _Prepared(await _embed(index, texts, options), None)
    vectors, stored = await asyncio.gather(
        _embed(index, texts, options), index.stored_counts([p.doc.doc_id for p in group])
    )
    return _Prepared(vectors, stored)


async def _embed(
    index: VectorIndex, texts: list[str], options: IngestSettings
) -> list[list[float]]:
    vectors: list[list[float]] = []
    for start in range(0, len(texts), options.embed_batch_size):
        batch = texts[start : start + options.embed_batch_size]
        try:
            embedded = await index.embed(batch)
        except openai.APIStatusError as exc:
            if exc.status_code not in REJECTING_STATUSES:
                raise
            raise UnusableDocument(
                f"the embedding API rejected the text ({exc.status_code}): {exc.message}"
            ) from exc
        if len(embedded) != len(batch):
            raise IngestError(
                f"the embedding API answered {len(embedded)} vectors for {len(batch)} texts"
            )
        vectors += embedded
    return vectors


async def _abandon(steps: asyncio.Queue[_Step | None]) -> None:
    """Cancel the embeddings of groups that will not be written (the ingest ended early)."""
    tasks: list[asyncio.Task[_Prepared]] = []
    while not steps.empty():
        step = steps.get_nowait()
        if isinstance(step, _Group):
            step.prepared.cancel()
            tasks.append(step.prepared)
    await asyncio.gather(*tasks, return_exceptions=True)
