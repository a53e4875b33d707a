"""Ingest throughput and retrieval latency of the ingestor's pipeline, with a baseline.

Starts mockai (a subprocess on a free 127.0.0.1 port) and Qdrant local mode in a temporary
folder, then measures on the same synthetic documents:

- pipeline: `index_documents` end to end (chunk -> embed over HTTP -> write), into an empty
  collection;
- its parts: chunking alone, embedding alone (same batches), our write alone (the same vectors
  again: a re-ingest, with its stale-chunk lookup);
- baseline: qdrant-client's own bulk `upload_points` of the SAME vectors and payloads into a
  fresh collection; the ratios show what we add beyond a raw upsert;
- retrieval: `VectorIndex.search` (embeds the query over HTTP, then queries) and, as its
  baseline, a raw `query_points` with the query vector already known: median and p99.

Usage, from the project root:
    .venv/bin/python -m bench.bench_ingest [--docs 200] [--doc-chars 3000] [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from qdrant_client import AsyncQdrantClient
from qdrant_client.http import models

from bench.timing import median_p99_ms, time_each
from libs.common import Settings
from libs.common.logging import configure_logging
from libs.events import DocumentToIngest
from services.ingestor.chunking import chunk_text
from services.ingestor.pipeline import Indexed, index_documents
from services.ingestor.settings import IngestSettings
from services.ingestor.vectors import EmbeddedDocument, open_index, point_id
from tests.conftest import free_port


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=200, help="documents (default: 200)")
    parser.add_argument("--doc-chars", type=int, default=3000, help="characters per document")
    parser.add_argument("--queries", type=int, default=200, help="search queries to time")
    parser.add_argument("--chunk-size", type=int, default=IngestSettings().chunk_size)
    parser.add_argument("--chunk-overlap", type=int, default=IngestSettings().chunk_overlap)
    parser.add_argument("--embed-batch-size", type=int, default=IngestSettings().embed_batch_size)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


@contextmanager
def mockai() -> Iterator[str]:
    """mockai in a subprocess (its own CPU, like a real embedding API); yields its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "services.mockai:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(command, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("mockai did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(10)


def synthetic_documents(count: int, chars: int, seed: int) -> list[DocumentToIngest]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["".join(rng.choices(letters, k=rng.randint(3, 10))) for _ in range(3000)]
    documents = []
    for n in range(count):
        paragraphs: list[str] = []
        while sum(len(p) for p in paragraphs) < chars:
            sentences = [
                " ".join(rng.choices(vocabulary, k=rng.randint(6, 22))).capitalize() + "."
                for _ in range(rng.randint(3, 7))
            ]
            paragraphs.append(" ".join(sentences))
        text = "\n\n".join(paragraphs)[:chars]
        documents.append(
            DocumentToIngest(doc_id=f"bench-{n}", text=text, title=f"Doc {n}", source=f"{n}.txt")
        )
    return documents


def as_points(document: EmbeddedDocument) -> list[models.PointStruct]:
    """The points our write stores, built by hand for the baseline."""
    # Baseline: rebuilt here on purpose, independent of the VectorIndex code it is compared with.
    doc = document.doc
    return [
        models.PointStruct(
            id=point_id(doc.doc_id, i),
            vector=vector,
            payload={
                "doc_id": doc.doc_id,
                "chunk_index": i,
                "chunks": len(document),
                "text": text,
                "title": doc.title,
                "source": doc.source,
                "metadata": doc.metadata,
            },
        )
        for i, (text, vector) in enumerate(zip(document.chunks, document.vectors, strict=True))
    ]


async def run(args: argparse.Namespace, openai_url: str, folder: Path) -> None:
    options = IngestSettings(
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        embed_batch_size=args.embed_batch_size,
        embed_max_retries=0,
    )
    settings = Settings(data_dir=folder / "ours", openai_base_url=openai_url)
    documents = synthetic_documents(args.docs, args.doc_chars, args.seed)
    rows: dict[str, tuple[int, float]] = {}
    index = await open_index(settings, options)  # creates the (empty) collection
    baseline = AsyncQdrantClient(path=str(folder / "baseline"))
    try:
        await index.embed(["warm up the connection"] * 8)

        started = time.perf_counter()
        texts = [
            chunk_text(d.text, size=options.chunk_size, overlap=options.chunk_overlap)
            for d in documents
        ]
        chunks = sum(len(t) for t in texts)
        rows["  chunking alone"] = (chunks, time.perf_counter() - started)

        flat = [text for doc_texts in texts for text in doc_texts]
        started = time.perf_counter()
        vectors: list[list[float]] = []
        for start in range(0, len(flat), options.embed_batch_size):
            vectors += await index.embed(flat[start : start + options.embed_batch_size])
        rows["  embedding alone (HTTP)"] = (chunks, time.perf_counter() - started)
        embedded = []
        for doc, doc_texts in zip(documents, texts, strict=True):
            embedded.append(EmbeddedDocument(doc, doc_texts, vectors[: len(doc_texts)]))
            vectors = vectors[len(doc_texts) :]

        await baseline.create_collection(
            "baseline",
            vectors_config=models.VectorParams(size=index.dims, distance=models.Distance.COSINE),
        )
        points = [point for document in embedded for point in as_points(document)]
        started = time.perf_counter()
        baseline.upload_points("baseline", points, batch_size=64, wait=True)  # sync, even here
        rows["baseline: qdrant upload_points"] = (chunks, time.perf_counter() - started)

        started = time.perf_counter()
        async for _doc, outcome in index_documents(index, documents, options):
            assert isinstance(outcome, Indexed), outcome
        rows["pipeline: chunk+embed+write"] = (chunks, time.perf_counter() - started)

        started = time.perf_counter()
        await index.write(embedded)
        rows["  our write alone (re-ingest)"] = (chunks, time.perf_counter() - started)
        assert (await baseline.count("baseline", exact=True)).count == chunks
        assert await index.count() == chunks

        rng = random.Random(args.seed + 1)
        queries = [" ".join(rng.sample(t.split(), min(6, len(t.split())))) for t in flat]
        queries = [rng.choice(queries) for _ in range(args.queries)]
        ours = await time_each(lambda query: index.search(query, 5), queries)
        query_vectors = await index.embed(queries[: min(len(queries), 2048)])
        raw = await time_each(
            lambda vector: baseline.query_points(
                "baseline", query=vector, limit=5, with_payload=True
            ),
            query_vectors,
        )
    finally:
        await baseline.close()
        await index.close()
    report(args, options, rows, ours, raw)


ROW_ORDER = (
    "pipeline: chunk+embed+write",
    "  chunking alone",
    "  embedding alone (HTTP)",
    "  our write alone (re-ingest)",
    "baseline: qdrant upload_points",
)


def report(
    args: argparse.Namespace,
    options: IngestSettings,
    rows: dict[str, tuple[int, float]],
    ours: list[float],
    raw: list[float],
) -> None:
    base = rows["baseline: qdrant upload_points"][1]
    print(
        f"{args.docs} documents x {args.doc_chars} chars; chunk {options.chunk_size}/"
        f"{options.chunk_overlap}; embed batch {options.embed_batch_size}; Qdrant local mode"
    )
    print(f"{'ingest':<36} {'chunks':>7} {'seconds':>8} {'chunks/s':>9} {'x baseline':>10}")
    for name in ROW_ORDER:
        count, seconds = rows[name]
        rate = count / seconds if seconds else float("inf")
        print(f"{name:<36} {count:>7} {seconds:>8.3f} {rate:>9.0f} {seconds / base:>10.2f}")
    print(f"\n{'retrieval (k=5)':<36} {'queries':>7} {'median ms':>9} {'p99 ms':>8}")
    for name, latencies in (
        ("VectorIndex.search (embed+query)", ours),
        ("baseline: raw query_points", raw),
    ):
        median, p99 = median_p99_ms(latencies)
        print(f"{name:<36} {len(latencies):>7} {median:>9.2f} {p99:>8.2f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning")  # the table alone on stdout
    with mockai() as openai_url, tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder:
        asyncio.run(run(args, openai_url, Path(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
