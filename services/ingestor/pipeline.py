"""Index documents: chunk, embed in batches, upsert; one outcome per document.

Small documents share embedding requests and writes: consecutive documents are grouped while
their chunks fit in one batch (`embed_batch_size`); a larger document is embedded in several
requests of its own. If the embedding API rejects a group's input (4xx: too long, invalid),
each document of the group is tried alone, so only the culprit fails. Errors that may pass
(connection, timeout, rate limit, 5xx) and storage errors are raised: the consumer loop
retries the command.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

import openai

from libs.events import DocumentToIngest
from services.ingestor.chunking import chunk_text
from services.ingestor.errors import IngestError, UnusableDocument
from services.ingestor.settings import IngestSettings
from services.ingestor.vectors import EmbeddedDocument, VectorIndex

__all__ = ["Indexed", "Outcome", "Rejected", "index_documents"]

REJECTING_STATUSES = frozenset({400, 413, 422})
"""Answers of the embedding API that say the input itself is wrong: retrying cannot help."""


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


async def index_documents(
    index: VectorIndex, documents: Sequence[DocumentToIngest], options: IngestSettings
) -> AsyncGenerator[tuple[DocumentToIngest, Outcome], None]:
    """Index each document; yields its outcome as soon as it is known, in order."""
    group: list[_Planned] = []
    for doc in documents:
        chunks = chunk_text(doc.text, size=options.chunk_size, overlap=options.chunk_overlap)
        if not chunks:
            yield doc, Rejected(doc.doc_id, "no text left after cleaning: the text is blank")
            continue
        if group and sum(len(p.chunks) for p in group) + len(chunks) > options.embed_batch_size:
            async for outcome in _index_group(index, group, options):
                yield outcome
            group = []
        group.append(_Planned(doc, chunks))
    if group:
        async for outcome in _index_group(index, group, options):
            yield outcome


async def _index_group(
    index: VectorIndex, group: list[_Planned], options: IngestSettings
) -> AsyncIterator[tuple[DocumentToIngest, Outcome]]:
    started = time.perf_counter()
    try:
        vectors = await _embed(index, [text for p in group for text in p.chunks], options)
    except UnusableDocument as exc:
        if len(group) == 1:
            yield group[0].doc, Rejected(group[0].doc.doc_id, str(exc))
            return
        for planned in group:  # find which document the API refuses
            async for outcome in _index_group(index, [planned], options):
                yield outcome
        return
    embedded: list[EmbeddedDocument] = []
    offset = 0
    for planned in group:
        doc_vectors = vectors[offset : offset + len(planned.chunks)]
        embedded.append(EmbeddedDocument(planned.doc, planned.chunks, doc_vectors))
        offset += len(planned.chunks)
    await index.write(embedded)
    elapsed = time.perf_counter() - started
    for planned in group:
        yield planned.doc, Indexed(planned.doc.doc_id, len(planned.chunks), index.dims, elapsed)


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
