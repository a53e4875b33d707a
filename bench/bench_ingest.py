"""Ingest throughput and retrieval latency of the ingestor's pipeline, with a baseline.

Starts mockai (a subprocess on a free 127.0.0.1 port, once per embedding latency measured) and
Qdrant local mode in a temporary folder, then measures on the same synthetic documents, in
each of `--rounds` rounds (fresh collections each time):

- pipeline: `index_documents` end to end (chunk -> embed over HTTP -> write), into an empty
  collection, one call per ingest command of `--command-docs` documents (as the consumer
  calls it: the gateway queues at most 100 documents a command);
- its parts: chunking alone, embedding alone (same batches, one request after the other), our
  write alone (the same vectors again: a re-ingest, with its stale-chunk lookup);
- baseline: qdrant-client's own bulk `upload_points` of the SAME vectors and payloads into a
  fresh collection, command by command, each next to the pipeline's same command and taking
  turns going first, since the machine and its disk are shared and their speed changes all
  the time; the ratios show what we add beyond a raw upsert;
- retrieval (first latency only): `VectorIndex.search` (embeds the query over HTTP, then
  queries) and, as its baseline, a raw `query_points` with the query vector already known.

Each table shows the median of the rounds; the ratio line is the pipeline's throughput over
the baseline's, per round and their median. `--embed-ms` lists mockai's latency per
embeddings request to measure with (`MOCKAI_EMBED_MS`; 30 is like a hosted API), where
overlapping embedding with writing matters most. Unlike a hosted API, mockai computes its
vectors on this machine's CPUs, which the writes need too.

Usage, from the project root:
    .venv/bin/python -m bench.bench_ingest [--docs 500] [--rounds 3] [--embed-ms 0,30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from qdrant_client import AsyncQdrantClient
from qdrant_client.http import models

from bench.timing import median_p99_ms, time_each
from libs.common import Settings
from libs.common.logging import configure_logging
from libs.events import DocumentToIngest
from services.gateway.ingest_api import MAX_BATCH_DOCUMENTS
from services.ingestor.chunking import chunk_text
from services.ingestor.pipeline import Indexed, index_documents
from services.ingestor.settings import IngestSettings
from services.ingestor.vectors import EmbeddedDocument, VectorIndex, open_index, point_id
from tests.conftest import free_port


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=500, help="documents (default: 500)")
    parser.add_argument("--doc-chars", type=int, default=3000, help="characters per document")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, median shown (default: 3)")
    parser.add_argument(
        "--command-docs",
        type=int,
        default=MAX_BATCH_DOCUMENTS,
        help=f"documents per ingest command (default: {MAX_BATCH_DOCUMENTS}, the gateway's most)",
    )
    parser.add_argument(
        "--embed-ms",
        default="0,30",
        help="mockai's latency per embeddings request, comma-separated cases (default: 0,30)",
    )
    parser.add_argument("--queries", type=int, default=200, help="search queries to time")
    parser.add_argument("--chunk-size", type=int, default=IngestSettings().chunk_size)
    parser.add_argument("--chunk-overlap", type=int, default=IngestSettings().chunk_overlap)
    parser.add_argument("--embed-batch-size", type=int, default=IngestSettings().embed_batch_size)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


@contextmanager
def mockai(embed_ms: float = 0.0) -> Iterator[str]:
    """mockai in a subprocess (its own CPU, like a real embedding API), answering each
    embeddings request after `embed_ms`; yields its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "services.mockai:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "MOCKAI_EMBED_MS": f"{embed_ms:g}"}
    process = subprocess.Popen(command, cwd=root, env=env)
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


PIPELINE = "pipeline: chunk+embed+write"
CHUNKING = "  chunking alone"
EMBEDDING = "  embedding alone (HTTP)"
REWRITE = "  our write alone (re-ingest)"
BASELINE = "baseline: qdrant upload_points"
ROW_ORDER = (PIPELINE, CHUNKING, EMBEDDING, REWRITE, BASELINE)


@dataclass
class Rounds:
    """What the rounds of one case measured: per row, the chunks and each round's seconds."""

    chunks: int = 0
    seconds: dict[str, list[float]] = field(default_factory=dict)
    ratios: list[float] = field(default_factory=list)  # per round: pipeline/baseline chunks/s
    retrieval: tuple[list[float], list[float]] | None = None  # ours, raw

    def add(self, row: str, seconds: float) -> None:
        self.seconds.setdefault(row, []).append(seconds)


def ingest_options(args: argparse.Namespace) -> IngestSettings:
    return IngestSettings(
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        embed_batch_size=args.embed_batch_size,
        embed_max_retries=0,
    )


async def measure_round(
    args: argparse.Namespace,
    openai_url: str,
    folder: Path,
    number: int,
    rounds: Rounds,
    retrieval: bool,
) -> None:
    """One round into fresh collections under `folder`. The documents go in as ingest
    commands of `--command-docs` each, one `index_documents` call per command as the consumer
    does; each command's baseline upload runs next to it, the two taking turns going first, so
    that the shared machine's changing speed weighs on both alike. The first round also times
    retrieval if `retrieval`."""
    options = ingest_options(args)
    documents = synthetic_documents(args.docs, args.doc_chars, args.seed)
    settings = Settings(data_dir=folder / "ours", openai_base_url=openai_url)
    index = await open_index(settings, options)  # creates the (empty) collection
    baseline = AsyncQdrantClient(path=str(folder / "baseline"))
    try:
        await index.embed(["warm up the connection"] * 8)

        started = time.perf_counter()
        texts = [
            chunk_text(d.text, size=options.chunk_size, overlap=options.chunk_overlap)
            for d in documents
        ]
        rounds.chunks = chunks = sum(len(t) for t in texts)
        rounds.add(CHUNKING, time.perf_counter() - started)

        flat = [text for doc_texts in texts for text in doc_texts]
        started = time.perf_counter()
        vectors: list[list[float]] = []
        for start in range(0, len(flat), options.embed_batch_size):
            vectors += await index.embed(flat[start : start + options.embed_batch_size])
        rounds.add(EMBEDDING, time.perf_counter() - started)
        embedded = []
        for doc, doc_texts in zip(documents, texts, strict=True):
            embedded.append(EmbeddedDocument(doc, doc_texts, vectors[: len(doc_texts)]))
            vectors = vectors[len(doc_texts) :]

        await baseline.create_collection(
            "baseline",
            vectors_config=models.VectorParams(size=index.dims, distance=models.Distance.COSINE),
        )
        spent = {BASELINE: 0.0, PIPELINE: 0.0, REWRITE: 0.0}
        size = args.command_docs
        for command, start in enumerate(range(0, len(documents), size)):
            command_documents = documents[start : start + size]
            points = [p for document in embedded[start : start + size] for p in as_points(document)]
            for row in (BASELINE, PIPELINE)[:: -1 if (number + command) % 2 else 1]:
                started = time.perf_counter()
                if row == BASELINE:  # sync, even on the async client
                    baseline.upload_points("baseline", points, batch_size=64, wait=True)
                else:
                    async for _doc, outcome in index_documents(index, command_documents, options):
                        assert isinstance(outcome, Indexed), outcome
                spent[row] += time.perf_counter() - started
        for start in range(0, len(documents), size):
            started = time.perf_counter()
            await index.write(embedded[start : start + size])
            spent[REWRITE] += time.perf_counter() - started
        for row, seconds in spent.items():
            rounds.add(row, seconds)
        rounds.ratios.append(spent[BASELINE] / spent[PIPELINE])
        assert (await baseline.count("baseline", exact=True)).count == chunks
        assert await index.count() == chunks

        if number == 0 and retrieval and args.queries:
            rounds.retrieval = await measure_retrieval(args, index, baseline, flat)
    finally:
        await baseline.close()
        await index.close()


async def measure_retrieval(
    args: argparse.Namespace, index: VectorIndex, baseline: AsyncQdrantClient, flat: list[str]
) -> tuple[list[float], list[float]]:
    rng = random.Random(args.seed + 1)
    queries = [" ".join(rng.sample(t.split(), min(6, len(t.split())))) for t in flat]
    queries = [rng.choice(queries) for _ in range(args.queries)]
    ours = await time_each(lambda query: index.search(query, 5), queries)
    query_vectors = await index.embed(queries[: min(len(queries), 2048)])
    raw = await time_each(
        lambda vector: baseline.query_points("baseline", query=vector, limit=5, with_payload=True),
        query_vectors,
    )
    return ours, raw


def report(args: argparse.Namespace, embed_ms: float, rounds: Rounds) -> None:
    options = ingest_options(args)
    medians = {name: statistics.median(seconds) for name, seconds in rounds.seconds.items()}
    base = medians[BASELINE]
    print(
        f"{args.docs} documents x {args.doc_chars} chars; chunk {options.chunk_size}/"
        f"{options.chunk_overlap}; embed batch {options.embed_batch_size}; Qdrant local mode; "
        f"mockai embeddings {embed_ms:g} ms/request; {args.command_docs} documents a command; "
        f"median of {args.rounds} round(s)"
    )
    print(f"{'ingest':<36} {'chunks':>7} {'seconds':>8} {'chunks/s':>9} {'x baseline':>10}")
    for name in ROW_ORDER:
        seconds = medians[name]
        rate = rounds.chunks / seconds if seconds else float("inf")
        print(f"{name:<36} {rounds.chunks:>7} {seconds:>8.3f} {rate:>9.0f} {seconds / base:>10.2f}")
    each = " ".join(f"{ratio:.2f}" for ratio in rounds.ratios)
    print(
        f"pipeline/baseline throughput: {statistics.median(rounds.ratios):.2f} median "
        f"(rounds: {each}); target >= 0.80"
    )
    if rounds.retrieval is not None:
        ours, raw = rounds.retrieval
        print(f"\n{'retrieval (k=5)':<36} {'queries':>7} {'median ms':>9} {'p99 ms':>8}")
        for name, latencies in (
            ("VectorIndex.search (embed+query)", ours),
            ("baseline: raw query_points", raw),
        ):
            median, p99 = median_p99_ms(latencies)
            print(f"{name:<36} {len(latencies):>7} {median:>9.2f} {p99:>8.2f}")
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning")  # the tables alone on stdout
    cases = [float(ms) for ms in args.embed_ms.split(",") if ms.strip()]
    for case, embed_ms in enumerate(cases):
        rounds = Rounds()
        with (
            mockai(embed_ms) as openai_url,
            tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder,
        ):
            for number in range(args.rounds):
                round_folder = Path(folder) / f"round-{number}"
                measured = measure_round(
                    args, openai_url, round_folder, number, rounds, retrieval=case == 0
                )
                asyncio.run(measured)
        report(args, embed_ms, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
