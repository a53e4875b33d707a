"""The vector collection the ingestor owns: Qdrant local mode by default, a server by URL.

A chunk is one point. Its id is derived from (doc_id, chunk index), so indexing the same
document again overwrites its points instead of adding new ones; its payload carries the
chunk's text and the document's title, source and metadata.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai
import structlog
from openai import AsyncOpenAI
from qdrant_client import AsyncQdrantClient
from qdrant_client.http import models

from libs.common import Settings
from libs.events import DocumentToIngest
from services.ingestor.errors import IndexMismatch
from services.ingestor.settings import IngestSettings

__all__ = [
    "COLLECTION",
    "EmbeddedDocument",
    "SearchHit",
    "VectorIndex",
    "open_index",
    "point_id",
]

log = structlog.get_logger(__name__)

COLLECTION = "ragpoc_chunks"
_UPSERT_SLICE = 256
_POINT_NAMESPACE = uuid.UUID("5b0c7f5e-6f1d-4c51-9d0e-2a8f3e1c7b44")


def point_id(doc_id: str, chunk_index: int) -> str:
    """The point of chunk `chunk_index` of a document: the same on every ingest."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{doc_id}/{chunk_index}"))


@dataclass(frozen=True, slots=True)
class EmbeddedDocument:
    doc: DocumentToIngest
    chunks: Sequence[str]
    vectors: Sequence[list[float]]

    def __len__(self) -> int:
        return len(self.chunks)


@dataclass(frozen=True, slots=True)
class SearchHit:
    id: str
    score: float
    doc_id: str
    chunk_index: int
    title: str
    source: str
    text: str
    metadata: dict[str, Any]


@dataclass
class VectorIndex:
    qdrant: AsyncQdrantClient
    llm: AsyncOpenAI
    embedding_model: str
    dims: int = 0  # 0 until the collection exists
    collection: str = COLLECTION
    server: bool = False  # a Qdrant server (payload indexes) rather than local mode

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        reply = await self.llm.embeddings.create(model=self.embedding_model, input=list(texts))
        return [item.embedding for item in sorted(reply.data, key=lambda item: item.index)]

    async def prepare(self) -> None:
        """Learn the vector size of an existing collection, or create it after asking the
        embedding model for one vector."""
        if await self.qdrant.collection_exists(self.collection):
            self.dims = await self._collection_dims()
        else:
            [probe] = await self.embed(["dimension probe"])
            await self.ensure_collection(len(probe))

    async def ensure_collection(self, dims: int) -> None:
        """Create the collection for vectors of `dims` numbers, or check the existing one."""
        if self.dims == 0 and await self.qdrant.collection_exists(self.collection):
            self.dims = await self._collection_dims()
        if self.dims == 0:
            await self.qdrant.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=dims, distance=models.Distance.COSINE),
            )
            if self.server:
                for field, schema in (
                    ("doc_id", models.PayloadSchemaType.KEYWORD),
                    ("chunk_index", models.PayloadSchemaType.INTEGER),
                ):
                    await self.qdrant.create_payload_index(self.collection, field, schema)
            self.dims = dims
            log.info("index.collection_created", collection=self.collection, dims=dims)
        if dims != self.dims:
            raise IndexMismatch(
                f"collection {self.collection!r} holds vectors of {self.dims} numbers but the "
                f"embedding model {self.embedding_model!r} gives {dims}: use the model the "
                "collection was built with, or delete the collection and ingest again"
            )

    async def write(
        self, documents: Sequence[EmbeddedDocument], stored: Mapping[str, int] | None = None
    ) -> None:
        """Store each document's chunks as points 0..n-1, replacing an earlier version.

        Every point carries its document's chunk count, so an earlier version's count is one
        lookup (of its point 0) away: its points beyond n are deleted by id, before point 0
        is overwritten, so a crash in between leaves them findable for the retry. `stored`
        is that lookup done already (`stored_counts`, then corrected by the caller for what
        it wrote since); None: look up now. Of a document given twice, the last version wins.
        """
        latest = list({document.doc.doc_id: document for document in documents}.values())
        if not latest:
            return
        await self.ensure_collection(len(latest[0].vectors[0]))
        if stored is None:
            stored = await self.stored_counts([d.doc.doc_id for d in latest])
        stale: list[models.ExtendedPointId] = []
        for document in latest:
            count = stored.get(document.doc.doc_id, 0)
            stale += [point_id(document.doc.doc_id, i) for i in range(len(document), count)]
        if stale:
            await self.qdrant.delete(self.collection, models.PointIdsList(points=stale))
        points = [point for document in latest for point in _points(document)]
        for start in range(0, len(points), _UPSERT_SLICE):
            await self.qdrant.upsert(self.collection, points[start : start + _UPSERT_SLICE])
        for document in latest:
            if stored.get(document.doc.doc_id, 0) < 0:  # stored without a count: use a filter
                stale_filter = _chunks_of(document.doc.doc_id, first=len(document))
                await self.qdrant.delete(
                    self.collection, models.FilterSelector(filter=stale_filter)
                )

    async def stored_counts(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """doc_id -> chunk count of its stored version (-1: stored without a count); a
        document never stored is absent. The collection must exist."""
        ids: list[models.ExtendedPointId] = [point_id(doc_id, 0) for doc_id in doc_ids]
        records = await self.qdrant.retrieve(
            self.collection, ids, with_payload=["doc_id", "chunks"], with_vectors=False
        )
        counts: dict[str, int] = {}
        for record in records:
            payload = record.payload or {}
            counts[str(payload.get("doc_id", ""))] = int(payload.get("chunks", -1))
        return counts

    async def count(self, doc_id: str | None = None) -> int:
        """Points in the collection, or of one document."""
        if not await self.qdrant.collection_exists(self.collection):
            return 0
        query = _chunks_of(doc_id) if doc_id is not None else None
        result = await self.qdrant.count(self.collection, count_filter=query, exact=True)
        return result.count

    async def search(self, query: str, k: int) -> list[SearchHit]:
        if self.dims == 0 and not await self.qdrant.collection_exists(self.collection):
            return []  # nothing was ever indexed
        [vector] = await self.embed([query])
        result = await self.qdrant.query_points(
            self.collection, query=vector, limit=k, with_payload=True
        )
        return [_hit(point) for point in result.points]

    async def _collection_dims(self) -> int:
        info = await self.qdrant.get_collection(self.collection)
        vectors = info.config.params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise IndexMismatch(
                f"collection {self.collection!r} has named vectors; the ingestor needs one "
                "unnamed vector per point: delete the collection and ingest again"
            )
        return vectors.size

    async def close(self) -> None:
        await self.qdrant.close()
        await self.llm.close()


def _points(document: EmbeddedDocument) -> list[models.PointStruct]:
    doc = document.doc
    return [
        models.PointStruct(
            id=point_id(doc.doc_id, index),
            vector=vector,
            payload={
                "doc_id": doc.doc_id,
                "chunk_index": index,
                "chunks": len(document),
                "text": text,
                "title": doc.title,
                "source": doc.source,
                "metadata": doc.metadata,
            },
        )
        for index, (text, vector) in enumerate(zip(document.chunks, document.vectors, strict=True))
    ]


def _chunks_of(doc_id: str, first: int = 0) -> models.Filter:
    must: list[models.Condition] = [
        models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))
    ]
    if first:
        must.append(models.FieldCondition(key="chunk_index", range=models.Range(gte=first)))
    return models.Filter(must=must)


def _hit(point: models.ScoredPoint) -> SearchHit:
    payload = point.payload or {}
    return SearchHit(
        id=str(point.id),
        score=point.score,
        doc_id=str(payload.get("doc_id", "")),
        chunk_index=int(payload.get("chunk_index", 0)),
        title=str(payload.get("title", "")),
        source=str(payload.get("source", "")),
        text=str(payload.get("text", "")),
        metadata=dict(payload.get("metadata") or {}),
    )


async def open_index(settings: Settings, options: IngestSettings | None = None) -> VectorIndex:
    """Connect to Qdrant and the embedding API. The collection is created now if the API
    answers, else on the first ingest: the ingestor starts even while the API is down."""
    options = options or IngestSettings()
    if settings.qdrant_url:
        qdrant = AsyncQdrantClient(url=settings.qdrant_url)
    else:
        path = settings.data_dir / "qdrant"
        path.mkdir(parents=True, exist_ok=True)
        qdrant = AsyncQdrantClient(path=str(path))
    llm = AsyncOpenAI(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key,
        timeout=options.embed_timeout_s,
        max_retries=options.embed_max_retries,
    )
    index = VectorIndex(
        qdrant=qdrant,
        llm=llm,
        embedding_model=settings.embedding_model,
        server=bool(settings.qdrant_url),
    )
    try:
        await index.prepare()
    except openai.APIError as exc:
        log.warning("index.embeddings_unavailable", error=str(exc), url=settings.openai_base_url)
    except BaseException:
        await index.close()
        raise
    return index
