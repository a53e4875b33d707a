"""The vector collection the ingestor owns: Qdrant local mode by default, a server by URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openai import AsyncOpenAI
from qdrant_client import AsyncQdrantClient
from qdrant_client.http import models

from libs.common import Settings

__all__ = ["COLLECTION", "SearchHit", "VectorIndex", "open_index"]

COLLECTION = "ragpoc_chunks"


@dataclass(frozen=True, slots=True)
class SearchHit:
    id: str
    score: float
    text: str
    payload: dict[str, Any]


@dataclass
class VectorIndex:
    qdrant: AsyncQdrantClient
    llm: AsyncOpenAI
    embedding_model: str
    dims: int
    collection: str = COLLECTION

    async def embed(self, texts: list[str]) -> list[list[float]]:
        reply = await self.llm.embeddings.create(model=self.embedding_model, input=texts)
        return [item.embedding for item in sorted(reply.data, key=lambda item: item.index)]

    async def search(self, query: str, k: int) -> list[SearchHit]:
        [vector] = await self.embed([query])
        result = await self.qdrant.query_points(
            self.collection, query=vector, limit=k, with_payload=True
        )
        return [
            SearchHit(
                id=str(point.id),
                score=point.score,
                text=str((point.payload or {}).get("text", "")),
                payload=dict(point.payload or {}),
            )
            for point in result.points
        ]

    async def close(self) -> None:
        await self.qdrant.close()
        await self.llm.close()


async def open_index(settings: Settings) -> VectorIndex:
    """Connect to Qdrant and the embedding API; create the collection with the model's size."""
    if settings.qdrant_url:
        qdrant = AsyncQdrantClient(url=settings.qdrant_url)
    else:
        path = settings.data_dir / "qdrant"
        path.mkdir(parents=True, exist_ok=True)
        qdrant = AsyncQdrantClient(path=str(path))
    llm = AsyncOpenAI(base_url=settings.openai_base_url, api_key=settings.openai_api_key)
    index = VectorIndex(qdrant=qdrant, llm=llm, embedding_model=settings.embedding_model, dims=0)
    [probe] = await index.embed(["dimension probe"])
    index.dims = len(probe)
    if not await qdrant.collection_exists(COLLECTION):
        await qdrant.create_collection(
            COLLECTION,
            vectors_config=models.VectorParams(size=index.dims, distance=models.Distance.COSINE),
        )
    return index
