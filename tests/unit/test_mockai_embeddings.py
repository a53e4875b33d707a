"""mockai's embeddings: the endpoint, driven with the official openai client, and the function."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from services.mockai import create_app
from services.mockai.embeddings import DEFAULT_DIMS, cosine, embed_text, embed_token_ids

BASE_URL = "http://mockai.test/v1"


def openai_client(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="x", base_url=BASE_URL, http_client=http, max_retries=0)


@pytest.fixture
async def client() -> AsyncIterator[openai.AsyncOpenAI]:
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app())) as http,
        openai_client(http) as client,
    ):
        yield client


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(value * value for value in vector))


async def embed(client: openai.AsyncOpenAI, text: str, **params: Any) -> list[float]:
    response = await client.embeddings.create(
        model="mock-embedding", input=text, encoding_format="float", **params
    )
    return response.data[0].embedding


async def test_single_text_gets_a_unit_vector_of_default_size(client: openai.AsyncOpenAI) -> None:
    response = await client.embeddings.create(
        model="mock-embedding", input="The quick brown fox", encoding_format="float"
    )

    assert response.object == "list"
    assert response.model == "mock-embedding"
    [item] = response.data
    assert item.object == "embedding"
    assert item.index == 0
    assert len(item.embedding) == DEFAULT_DIMS == 256
    assert norm(item.embedding) == pytest.approx(1.0, abs=1e-6)
    assert item.embedding == embed_text("The quick brown fox")
    assert response.usage.prompt_tokens == 4
    assert response.usage.total_tokens == 4


async def test_same_text_always_gets_the_same_vector(client: openai.AsyncOpenAI) -> None:
    first = await embed(client, "Retrieval augmented generation")
    second = await embed(client, "retrieval   AUGMENTED generation!")

    assert first == second  # lowercased word tokens, punctuation and spacing ignored


async def test_batch_keeps_input_order(client: openai.AsyncOpenAI) -> None:
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]

    response = await client.embeddings.create(
        model="mock-embedding", input=texts, encoding_format="float"
    )

    assert [item.index for item in response.data] == [0, 1, 2]
    assert [item.embedding for item in response.data] == [embed_text(text) for text in texts]
    assert response.usage.prompt_tokens == 6


async def test_base64_encoding_round_trips_to_the_float_vector(
    client: openai.AsyncOpenAI,
) -> None:
    text = "Vectors travel as little-endian float32"
    floats = await embed(client, text)

    response = await client.embeddings.create(
        model="mock-embedding", input=text, encoding_format="base64"
    )

    encoded = response.data[0].embedding
    assert isinstance(encoded, str)
    raw = base64.b64decode(encoded)
    assert len(raw) == 4 * DEFAULT_DIMS
    decoded = list(struct.unpack(f"<{DEFAULT_DIMS}f", raw))
    assert decoded == pytest.approx(floats, abs=1e-7)


async def test_client_default_format_decodes_to_the_float_vector(
    client: openai.AsyncOpenAI,
) -> None:
    # Without encoding_format the openai client asks for base64 and decodes it itself.
    text = "Default encoding of the official client"
    floats = await embed(client, text)

    response = await client.embeddings.create(model="mock-embedding", input=text)

    assert response.data[0].embedding == pytest.approx(floats, abs=1e-7)


async def test_dimensions_parameter_sets_the_vector_size(client: openai.AsyncOpenAI) -> None:
    vector = await embed(client, "short vectors", dimensions=32)

    assert len(vector) == 32
    assert norm(vector) == pytest.approx(1.0, abs=1e-6)
    assert vector == embed_text("short vectors", 32)


async def test_environment_sets_the_default_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCKAI_EMBEDDING_DIMS", "64")
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app())) as http,
        openai_client(http) as client,
    ):
        default = await embed(client, "sized by the environment")
        requested = await embed(client, "sized by the request", dimensions=16)

    assert len(default) == 64
    assert len(requested) == 16


def test_invalid_environment_size_is_refused_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCKAI_EMBEDDING_DIMS", "lots")

    with pytest.raises(ValueError, match="MOCKAI_EMBEDDING_DIMS"):
        create_app()


async def test_texts_sharing_words_are_closer_than_unrelated_texts(
    client: openai.AsyncOpenAI,
) -> None:
    query = await embed(client, "how do cats sleep at night")
    related = await embed(client, "cats sleep most of the day and at night")
    unrelated = await embed(client, "quarterly revenue grew in europe")

    assert cosine(query, related) > 0.3
    assert cosine(query, related) > cosine(query, unrelated) + 0.3
    assert cosine(query, query) == pytest.approx(1.0, abs=1e-6)


async def test_text_without_words_gets_a_fixed_unit_vector(client: openai.AsyncOpenAI) -> None:
    vector = await embed(client, "?! ...")

    assert vector == [1.0] + [0.0] * (DEFAULT_DIMS - 1)
    assert vector == await embed(client, "   ")


async def test_token_ids_are_embedded_as_words(client: openai.AsyncOpenAI) -> None:
    single = await client.embeddings.create(
        model="mock-embedding", input=[101, 2023, 102], encoding_format="float"
    )
    batch = await client.embeddings.create(
        model="mock-embedding", input=[[101, 2023], [7]], encoding_format="float"
    )

    assert [item.embedding for item in single.data] == [embed_token_ids([101, 2023, 102])]
    assert single.data[0].embedding == embed_text("101 2023 102")
    assert [item.embedding for item in batch.data] == [
        embed_token_ids([101, 2023]),
        embed_token_ids([7]),
    ]
    assert batch.usage.prompt_tokens == 3


@pytest.mark.parametrize(
    ("params", "param", "problem"),
    [
        ({"input": ""}, "input", "Expected `str` of length >= 1"),
        ({"input": []}, "input", "Expected `array` of length >= 1"),
        ({"input": ["fine", ""]}, "input[1]", "Expected `str` of length >= 1"),
        ({"input": [[]]}, "input[0]", "Expected `array` of length >= 1"),
        ({"input": ["text", 12]}, "input", "not a mixture"),
        ({"input": "x", "dimensions": 0}, "dimensions", "Expected `int` >= 1"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", "Invalid enum value"),
    ],
)
async def test_invalid_embedding_requests_are_rejected_with_400(
    client: openai.AsyncOpenAI, params: dict[str, Any], param: str, problem: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.embeddings.create(model="mock-embedding", **params)

    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert problem in caught.value.message


def test_embedding_function_is_deterministic_and_normalised() -> None:
    vector = embed_text("Stable hashing, not Python's salted hash()", 128)

    assert vector == embed_text("stable HASHING not python s salted hash", 128)
    assert len(vector) == 128
    assert not any(math.isnan(value) for value in vector)
    assert norm(vector) == pytest.approx(1.0, abs=1e-6)
    assert struct.unpack("<128f", struct.pack("<128f", *vector)) == tuple(vector)  # float32


def test_embedding_function_rejects_non_positive_dims() -> None:
    with pytest.raises(ValueError, match="dims must be at least 1"):
        embed_text("anything", 0)
