"""The ingestor process for real: its consumer takes ingest commands from Redis, indexes the
documents in Qdrant local mode with embeddings from mockai over HTTP, announces each document
on the docs stream, and `/search` finds them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from libs.events import INGESTORS_GROUP, DocFailed, DocIngested, DocumentToIngest, Keys
from services.ingestor.vectors import point_id
from tests.conftest import free_port
from tests.integration.ingeststack import (
    all_doc_events,
    ingest_settings,
    next_doc_events,
    running_ingestor,
    running_mockai,
    send_ingest,
    stored_points,
)

SKY = (
    "The sky is blue because air molecules scatter short wavelengths of sunlight more than "
    "long ones. This is called Rayleigh scattering. At sunset the light crosses much more air, "
    "so most of the blue is scattered away before it reaches us. The remaining light looks red "
    "and orange. Clouds look white because their droplets scatter every colour about equally. "
    "On the Moon there is no air at all, so the sky there stays black even during the day."
)
BREAD = (
    "Sourdough bread rises thanks to wild yeast and lactic acid bacteria living in a starter. "
    "The bacteria make the dough sour. A long cold proof develops flavour and an open crumb."
)


def sky_document(text: str = SKY) -> DocumentToIngest:
    return DocumentToIngest(
        doc_id="doc-sky",
        text=text,
        title="Why is the sky blue?",
        source="notes/sky.md",
        metadata={"topic": "physics"},
    )


@asynccontextmanager
async def ingestor_on_mockai(
    redis_url: str,
    keys: Keys,
    data_dir: Path,
    failures: dict[str, int] | None = None,
    **overrides: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The ingestor, its embeddings from mockai (failing as `failures` says); yields a client
    for the ingestor's HTTP API."""
    async with running_mockai(failures) as openai_url:
        settings = ingest_settings(redis_url, keys, data_dir, openai_url, **overrides)
        async with running_ingestor(settings) as ingestor:
            yield ingestor


async def test_an_ingested_document_is_announced_and_found_by_search(
    redis_url: str, redis_client: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    bread = DocumentToIngest(doc_id="doc-bread", text=BREAD, title="Bread", source="bread.txt")
    async with ingestor_on_mockai(redis_url, keys, tmp_path) as ingestor:
        await send_ingest(redis_client, keys, "batch-1", sky_document(), bread)
        sky, bread_event = await next_doc_events(redis_client, keys, 2)

        assert isinstance(sky, DocIngested)
        assert (sky.doc_id, sky.batch_id, sky.title, sky.source) == (
            "doc-sky",
            "batch-1",
            "Why is the sky blue?",
            "notes/sky.md",
        )
        assert sky.chunks > 1  # 560 characters in chunks of at most 200
        assert sky.dims == 256
        assert sky.duration_s > 0
        assert sky.metadata == {"topic": "physics"}
        assert isinstance(bread_event, DocIngested)

        reply = await ingestor.post(
            "/search", json={"query": "at sunset the light crosses more air", "k": 3}
        )
        assert reply.status_code == 200
        best = reply.json()["hits"][0]
        assert best["doc_id"] == "doc-sky"
        assert "sunset" in best["text"]
        assert best["title"] == "Why is the sky blue?"
        assert best["source"] == "notes/sky.md"
        assert best["metadata"] == {"topic": "physics"}
        assert best["id"] == point_id("doc-sky", best["chunk_index"])
        assert 0 < best["score"] <= 1.0001

        bread_hits = await ingestor.post("/search", json={"query": "sourdough starter"})
        assert bread_hits.json()["hits"][0]["doc_id"] == "doc-bread"


async def test_ingesting_the_same_document_again_adds_no_points(
    redis_url: str, redis_client: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    async with ingestor_on_mockai(redis_url, keys, tmp_path):
        await send_ingest(redis_client, keys, "first", sky_document())
        [first] = await next_doc_events(redis_client, keys, 1)
        await send_ingest(redis_client, keys, "second", sky_document())
        await next_doc_events(redis_client, keys, 2)
    points = await stored_points(tmp_path)
    assert isinstance(first, DocIngested)
    assert len(points) == first.chunks
    assert sorted(p["chunk_index"] for p in points) == list(range(first.chunks))


async def test_a_shorter_version_of_a_document_drops_its_stale_chunks(
    redis_url: str, redis_client: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    async with ingestor_on_mockai(redis_url, keys, tmp_path) as ingestor:
        await send_ingest(redis_client, keys, "long", sky_document())
        await send_ingest(redis_client, keys, "short", sky_document("The sky is blue."))
        long_version, short_version = await next_doc_events(redis_client, keys, 2)
        hits = (await ingestor.post("/search", json={"query": "sunset", "k": 50})).json()
    assert isinstance(long_version, DocIngested)
    assert isinstance(short_version, DocIngested)
    assert (long_version.chunks > 1, short_version.chunks) == (True, 1)
    assert [hit["text"] for hit in hits["hits"]] == ["The sky is blue."]
    assert [p["text"] for p in await stored_points(tmp_path)] == ["The sky is blue."]


async def test_a_document_without_text_fails_at_once_and_the_rest_of_the_batch_is_indexed(
    redis_url: str, redis_client: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    blank = DocumentToIngest(doc_id="doc-blank", text="\x00\x07 \n\t")
    async with ingestor_on_mockai(redis_url, keys, tmp_path):
        await send_ingest(redis_client, keys, "mixed", blank, sky_document())
        await next_doc_events(redis_client, keys, 2)
    failed, ingested = await all_doc_events(redis_client, keys)
    assert isinstance(failed, DocFailed)
    assert (failed.doc_id, failed.batch_id) == ("doc-blank", "mixed")
    assert "no text left" in failed.reason
    assert isinstance(ingested, DocIngested)
    # not retried: acked on the first delivery, nothing dead-lettered
    assert (await redis_client.xpending(keys.ingest_commands, INGESTORS_GROUP))["pending"] == 0
    assert await redis_client.xlen(keys.dead_letters(keys.ingest_commands)) == 0


async def test_a_document_the_embedding_api_rejects_fails_alone(
    redis_url: str, redis_client: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    poison = DocumentToIngest(doc_id="doc-poison", text="REJECT-ME please, this is bad input.")
    async with ingestor_on_mockai(redis_url, keys, tmp_path, failures={"REJECT-ME": 400}):
        await send_ingest(redis_client, keys, "b", sky_document(), poison)
        events = await next_doc_events(redis_client, keys, 2)
    outcome = {event.doc_id: event for event in events}
    assert isinstance(outcome["doc-sky"], DocIngested)
    assert isinstance(outcome["doc-poison"], DocFailed)
    assert "rejected" in outcome["doc-poison"].reason
    assert await redis_client.xlen(keys.dead_letters(keys.ingest_commands)) == 0


async def test_an_unreachable_embedding_api_ends_in_the_dead_letters_and_doc_failed(
    redis_url: str, redis_client: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    settings = ingest_settings(
        redis_url,
        keys,
        tmp_path,
        closed,
        consumer_max_deliveries=2,
        consumer_min_idle_ms=50,
    )
    async with running_ingestor(settings):
        await send_ingest(redis_client, keys, "doomed", sky_document())
        [event] = await next_doc_events(redis_client, keys, 1)
    assert isinstance(event, DocFailed)
    assert (event.doc_id, event.batch_id) == ("doc-sky", "doomed")
    assert "gave up after repeated failures" in event.reason
    assert "APIConnectionError" in event.reason
    dead = await redis_client.xrange(keys.dead_letters(keys.ingest_commands))
    assert len(dead) == 1
    assert dead[0][1]["deliveries"] == "2"
    assert (await redis_client.xpending(keys.ingest_commands, INGESTORS_GROUP))["pending"] == 0


async def test_a_redelivered_command_does_not_announce_finished_documents_twice(
    redis_url: str, redis_client: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    flaky = DocumentToIngest(doc_id="doc-flaky", text="SERVER-FAILS on this one, every time.")
    async with ingestor_on_mockai(
        redis_url,
        keys,
        tmp_path,
        failures={"SERVER-FAILS": 500},
        consumer_max_deliveries=3,
        consumer_min_idle_ms=50,
    ):
        # the long sky fills an embedding batch of its own: indexed before the flaky one fails
        await send_ingest(redis_client, keys, "b", sky_document(SKY * 3), flaky)
        await next_doc_events(redis_client, keys, 2)
    events = await all_doc_events(redis_client, keys)
    assert [(type(e).__name__, e.doc_id) for e in events] == [
        ("DocIngested", "doc-sky"),
        ("DocFailed", "doc-flaky"),
    ]
    assert "InternalServerError" in events[1].reason  # type: ignore[union-attr]
    dead = await redis_client.xrange(keys.dead_letters(keys.ingest_commands))
    assert dead[0][1]["deliveries"] == "3"


async def test_the_ingestor_without_redis_still_serves_search(tmp_path: Path) -> None:
    async with ingestor_on_mockai("", Keys(), tmp_path) as ingestor:
        health = (await ingestor.get("/health")).json()
        reply = await ingestor.post("/search", json={"query": "anything"})
    assert health == {"status": "ok", "consumer": "off"}
    assert reply.json()["hits"] == []


async def test_an_undecodable_command_goes_straight_to_the_dead_letters(
    redis_url: str, redis_client: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    async with ingestor_on_mockai(redis_url, keys, tmp_path):
        await redis_client.xadd(keys.ingest_commands, {"type": "ingest", "data": "{oops"})
        await send_ingest(redis_client, keys, "after", sky_document())
        [event] = await next_doc_events(redis_client, keys, 1)
    assert isinstance(event, DocIngested)  # the consumer went on
    [(_id, dead)] = await redis_client.xrange(keys.dead_letters(keys.ingest_commands))
    assert dead["data"] == "{oops"
    assert "not a known command" in dead["reason"]
    assert (await redis_client.xpending(keys.ingest_commands, INGESTORS_GROUP))["pending"] == 0
