"""The ingest pipeline's stages overlap (the next groups are embedded, and their stored versions
looked up, while one group is written): these tests check that what the pipeline stores is
still what a one-at-a-time ingest would store, on mockai over HTTP and Qdrant local mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

from libs.common import Settings
from libs.events import DocumentToIngest
from services.ingestor.pipeline import Indexed, index_documents
from services.ingestor.vectors import VectorIndex, open_index
from tests.integration.ingeststack import TEST_OPTIONS, running_mockai, stored_points

SENTENCE = "Sentence number {n} of the {name} document talks about something else. "


def document(doc_id: str, name: str, sentences: int) -> DocumentToIngest:
    text = "".join(SENTENCE.format(n=n, name=name) for n in range(sentences))
    return DocumentToIngest(doc_id=doc_id, text=text.strip(), title=name)


@asynccontextmanager
async def index_on_mockai(data_dir: Path) -> AsyncIterator[VectorIndex]:
    """The ingestor's index (collection created), its embeddings from mockai."""
    async with running_mockai() as openai_url:
        settings = Settings(data_dir=data_dir, openai_base_url=openai_url)
        index = await open_index(settings, TEST_OPTIONS)
        try:
            yield index
        finally:
            await index.close()


async def ingest(index: VectorIndex, *documents: DocumentToIngest) -> list[Indexed]:
    outcomes = [outcome async for _doc, outcome in index_documents(index, documents, TEST_OPTIONS)]
    assert all(isinstance(outcome, Indexed) for outcome in outcomes), outcomes
    return [outcome for outcome in outcomes if isinstance(outcome, Indexed)]


async def test_a_document_given_twice_keeps_only_its_last_version(tmp_path: Path) -> None:
    long, short = document("doc-x", "long", 12), document("doc-x", "short", 1)
    filler = document("doc-filler", "filler", 30)  # more than a batch: a group of its own
    async with index_on_mockai(tmp_path) as index:
        # the short version's group is embedded, and its stored version looked up, before
        # the long version is written: the lookup must count the long version's chunks
        first, _filler, last = await ingest(index, long, filler, short)
        # and twice in one group: one write
        again = await ingest(index, long, short)
    points = [p for p in await stored_points(tmp_path) if p["doc_id"] == "doc-x"]
    assert (first.chunks > 1, last.chunks, again[-1].chunks) == (True, 1, 1)
    assert [p["text"] for p in points] == [short.text]


async def test_an_ingest_closed_early_leaves_no_embedding_running(tmp_path: Path) -> None:
    documents = [document(f"doc-{n}", f"number {n}", 30) for n in range(6)]  # 6 groups
    async with index_on_mockai(tmp_path) as index:
        async with aclosing(index_documents(index, documents, TEST_OPTIONS)) as outcomes:
            async for _doc, outcome in outcomes:
                assert isinstance(outcome, Indexed)
                break
        pipeline_tasks = [
            task
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "").startswith(("_prepare", "_produce"))
        ]
        count = await index.count()
    assert pipeline_tasks == []
    assert count > 0  # the first group was written before the ingest was closed
