"""`POST /api/ingest` and `POST /api/search` on the gateway, served for real: bad documents get a
4xx that names the problem and nothing is queued; good ones are queued under ids derived from
their content; `?wait` answers once they are searchable."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from libs.events import IngestDocuments, Keys, decode_command
from services.gateway.ingest_api import document_id
from tests.conftest import free_port
from tests.integration.ingeststack import (
    ingest_settings,
    running_gateway,
    running_ingestor,
    running_mockai,
)

MAX_BODY = 20_000


@pytest.fixture
async def gateway(redis_url: str, keys: Keys, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway alone: no ingestor runs, so nothing consumes the commands."""
    closed = f"http://127.0.0.1:{free_port()}"
    settings = ingest_settings(
        redis_url,
        keys,
        tmp_path,
        f"{closed}/v1",
        max_body_bytes=MAX_BODY,
        ingestor_base_url=closed,
    )
    async with running_gateway(settings) as client:
        yield client


async def queued_commands(redis: aioredis.Redis, keys: Keys) -> list[IngestDocuments]:
    entries = await redis.xrange(keys.ingest_commands)
    return [decode_command(fields["data"], IngestDocuments) for _id, fields in entries]


def many(n: int) -> dict[str, object]:
    return {"documents": [{"text": f"document number {i}"} for i in range(n)]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "request body is empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "Expected `object`, got `array`"),
        (b'{"title": "no text"}', "missing required field `text`"),
        (b'{"text": ""}', "text is blank"),
        (b'{"text": "  \\n\\t "}', "text is blank"),
        (b'{"text": 5}', "Expected `str`, got `int` - at `$.text`"),
        (b'{"text": "fine", "colour": "red"}', "unknown field `colour`"),
        (b'{"text": "fine", "metadata": [1]}', "Expected `object`, got `array` - at `$.metadata`"),
        (b'{"documents": []}', "documents is empty"),
        (b'{"documents": {"text": "x"}}', "Expected `array`, got `object`"),
        (b'{"documents": [{"text": "ok"}, {"text": " "}]}', "documents[1].text is blank"),
        (b'{"documents": [{"text": "ok"}, {"txt": "typo"}]}', "at `$.documents[1]`"),
        (json.dumps(many(101)).encode(), "at most 100 documents, got 101"),
    ],
)
async def test_a_bad_document_is_a_422_naming_the_problem_and_nothing_is_queued(
    gateway: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    keys: Keys,
    body: bytes,
    message: str,
) -> None:
    reply = await gateway.post(
        "/api/ingest", content=body, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422, reply.text
    assert message in reply.json()["error"]["message"]
    assert await redis_client.xlen(keys.ingest_commands) == 0


async def test_a_body_over_the_limit_is_a_413_and_nothing_is_queued(
    gateway: httpx.AsyncClient, redis_client: aioredis.Redis, keys: Keys
) -> None:
    reply = await gateway.post("/api/ingest", json={"text": "x" * MAX_BODY})
    assert reply.status_code == 413
    assert f"larger than {MAX_BODY} bytes" in reply.json()["error"]["message"]
    assert await redis_client.xlen(keys.ingest_commands) == 0


@pytest.mark.parametrize("wait", ["0", "-1", "121", "soon", "nan", ""])
async def test_a_wait_outside_0_to_120_seconds_is_a_422_and_nothing_is_queued(
    gateway: httpx.AsyncClient, redis_client: aioredis.Redis, keys: Keys, wait: str
) -> None:
    reply = await gateway.post("/api/ingest", params={"wait": wait}, json={"text": "Hello."})
    assert reply.status_code == 422
    assert "wait must be a number of seconds" in reply.json()["error"]["message"]
    assert await redis_client.xlen(keys.ingest_commands) == 0


async def test_a_document_is_queued_under_an_id_derived_from_its_content(
    gateway: httpx.AsyncClient, redis_client: aioredis.Redis, keys: Keys
) -> None:
    doc = {"text": "The sky is blue.", "title": "Sky", "source": "sky.md", "metadata": {"n": 1}}
    first = await gateway.post("/api/ingest", json=doc)
    again = await gateway.post("/api/ingest", json=doc)
    elsewhere = await gateway.post("/api/ingest", json={**doc, "source": "other.md"})

    assert first.status_code == 202
    body = first.json()
    assert body["status"] == "queued"
    assert body["document_ids"] == [document_id("The sky is blue.", "sky.md")]
    assert len(body["document_ids"][0]) == 32
    assert again.json()["document_ids"] == body["document_ids"]
    assert elsewhere.json()["document_ids"] != body["document_ids"]
    commands = await queued_commands(redis_client, keys)
    assert [c.batch_id for c in commands] == [
        r.json()["batch_id"] for r in (first, again, elsewhere)
    ]
    [queued] = commands[0].documents
    assert (queued.doc_id, queued.text, queued.title, queued.source, queued.metadata) == (
        body["document_ids"][0],
        "The sky is blue.",
        "Sky",
        "sky.md",
        {"n": 1},
    )


async def test_a_batch_queues_one_command_and_the_same_content_once(
    gateway: httpx.AsyncClient, redis_client: aioredis.Redis, keys: Keys
) -> None:
    reply = await gateway.post(
        "/api/ingest",
        json={"documents": [{"text": "One."}, {"text": "Two."}, {"text": "One."}]},
    )
    assert reply.status_code == 202
    ids = reply.json()["document_ids"]
    assert ids[0] == ids[2] != ids[1]
    [command] = await queued_commands(redis_client, keys)
    assert [d.text for d in command.documents] == ["One.", "Two."]


async def test_a_wait_that_runs_out_says_the_documents_are_still_pending(
    gateway: httpx.AsyncClient, redis_client: aioredis.Redis, keys: Keys
) -> None:
    reply = await gateway.post("/api/ingest", params={"wait": "0.3"}, json={"text": "Hello."})
    assert reply.status_code == 202
    body = reply.json()
    assert body["status"] == "pending"
    assert "still indexing after 0.3 s" in body["message"]
    assert body["documents"] == [{"doc_id": body["document_ids"][0], "status": "pending"}]
    assert await redis_client.xlen(keys.ingest_commands) == 1


async def test_search_with_the_ingestor_down_is_a_503_that_says_so(
    gateway: httpx.AsyncClient,
) -> None:
    reply = await gateway.post("/api/search", json={"query": "sky"})
    assert reply.status_code == 503
    assert "ingestor" in reply.json()["error"]["message"]
    assert "not reachable" in reply.json()["error"]["message"]


async def test_a_bad_search_is_a_422_without_asking_the_ingestor(
    gateway: httpx.AsyncClient,
) -> None:
    reply = await gateway.post("/api/search", json={"query": "", "k": 3})
    assert reply.status_code == 422


async def test_wait_answers_200_once_the_documents_are_searchable(
    redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    documents = [
        {"text": "Rayleigh scattering makes the sky blue.", "title": "Sky", "source": "a.md"},
        {"text": "Sourdough rises thanks to wild yeast.", "title": "Bread", "source": "b.md"},
        {"text": "REJECT-ME: the embedding API refuses this one.", "source": "refused"},
    ]
    async with running_mockai(failures={"REJECT-ME": 400}) as openai_url:
        settings = ingest_settings(redis_url, keys, tmp_path, openai_url)
        async with running_ingestor(settings), running_gateway(settings) as gateway:
            reply = await gateway.post(
                "/api/ingest", params={"wait": "30"}, json={"documents": documents}
            )
            found = await gateway.post("/api/search", json={"query": "wild yeast", "k": 2})

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "done"
    sky, bread, refused = body["documents"]
    assert [sky["status"], bread["status"], refused["status"]] == [
        "ingested",
        "ingested",
        "failed",
    ]
    assert sky["chunks"] == 1
    assert "rejected" in refused["reason"]
    assert found.status_code == 200
    best = found.json()["hits"][0]
    assert (best["doc_id"], best["title"], best["source"]) == (bread["doc_id"], "Bread", "b.md")
