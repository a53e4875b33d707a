"""mockai's health, models, errors and fault markers, driven with the official openai client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from services.mockai import create_app
from services.mockai.app import MAX_BODY_BYTES
from tests.unit.mockai_client import BASE_URL, SKY_ANSWER, collect_chat_stream, user


async def test_health_reports_ok(http: httpx.AsyncClient) -> None:
    response = await http.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_models_list_offers_chat_and_embedding_models(client: openai.AsyncOpenAI) -> None:
    models = [model async for model in client.models.list()]

    assert {model.id for model in models} >= {"mock-gpt", "mock-embedding"}
    assert all(model.object == "model" and model.owned_by == "mockai" for model in models)


async def test_model_retrieve_finds_known_and_rejects_unknown(client: openai.AsyncOpenAI) -> None:
    model = await client.models.retrieve("mock-embedding")
    assert model.id == "mock-embedding"

    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-17")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert "gpt-17" in caught.value.message


@pytest.mark.parametrize(
    ("messages", "param", "problem"),
    [
        ([], "messages", "Invalid value for 'messages': Expected `array` of length >= 1"),
        ("hello", "messages", "Invalid value for 'messages': Expected `array`, got `str`"),
        ([{"content": "hi"}], "messages[0].role", "Missing required parameter"),
        ([{"role": "chef", "content": "hi"}], "messages[0].role", "Invalid enum value 'chef'"),
        ([{"role": "user"}], "messages[0].content", "Missing required parameter"),
        ([{"role": "user", "content": 42}], "messages[0].content", "got `int`"),
    ],
)
async def test_invalid_chat_messages_are_rejected_with_400(
    client: openai.AsyncOpenAI, messages: Any, param: str, problem: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="mock-gpt", messages=messages)

    assert caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"
    assert caught.value.param == param
    assert problem in caught.value.message


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"stream": "yes"}, "stream"),
    ],
)
async def test_out_of_range_chat_parameters_are_rejected_with_400(
    client: openai.AsyncOpenAI, params: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="mock-gpt", messages=[user("hi")], extra_body=params
        )

    assert caught.value.param == param
    assert f"Invalid value for '{param}'" in caught.value.message


async def test_malformed_json_and_missing_messages_get_openai_shaped_400(
    http: httpx.AsyncClient,
) -> None:
    malformed = await http.post("/v1/chat/completions", content=b'{"model": "mock-gpt",')
    missing = await http.post("/v1/chat/completions", json={"model": "mock-gpt"})

    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "invalid_request_error"
    assert malformed.json()["error"]["code"] == "invalid_json"
    assert malformed.json()["error"]["message"].startswith("The request body is not valid JSON")
    assert missing.status_code == 400
    assert missing.json() == {
        "error": {
            "message": "Missing required parameter: 'messages'.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": None,
        }
    }


async def test_oversized_body_is_refused_with_413(http: httpx.AsyncClient) -> None:
    huge = json.dumps({"model": "mock-gpt", "messages": [user("x" * MAX_BODY_BYTES)]})

    response = await http.post("/v1/chat/completions", content=huge.encode())

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_unknown_url_is_an_openai_shaped_404(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/assistants", json={})

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/assistants)"


@pytest.mark.parametrize("stream", [False, True])
async def test_fail_marker_gives_a_server_error(client: openai.AsyncOpenAI, stream: bool) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(
            model="mock-gpt", messages=[user("Please [[mockai:fail]] now")], stream=stream
        )

    assert caught.value.status_code == 500
    assert caught.value.type == "server_error"


async def test_fail_marker_in_a_prompt_gives_a_server_error(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        await client.completions.create(model="mock-gpt", prompt="[[mockai:fail]]")


async def test_fail_marker_only_counts_in_the_last_user_message(
    client: openai.AsyncOpenAI,
) -> None:
    completion = await client.chat.completions.create(
        model="mock-gpt",
        messages=[user("[[mockai:fail]]"), {"role": "assistant", "content": "Oops."}, user("sky?")],
    )

    assert completion.choices[0].message.content == SKY_ANSWER


async def test_midstream_marker_aborts_the_stream_after_a_few_chunks() -> None:
    # In-process the aborting exception reaches the transport; a real server closes the
    # connection instead. Without re-raising, the client sees what was sent before the abort.
    transport = httpx.ASGITransport(app=create_app(), raise_app_exceptions=False)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://mockai.test") as http,
        openai.AsyncOpenAI(api_key="x", base_url=BASE_URL, http_client=http) as client,
    ):
        question = "Why is the sky blue? [[mockai:fail-midstream]]"
        chunks = await collect_chat_stream(client, [user(question)])
        raw = await http.post(
            "/v1/chat/completions",
            json={"model": "mock-gpt", "stream": True, "messages": [user(question)]},
        )

    assert [chunk.choices[0].delta.content for chunk in chunks] == [None, "The ", "sky "]
    assert all(chunk.choices[0].finish_reason is None for chunk in chunks)
    assert "[DONE]" not in raw.text


async def test_midstream_marker_is_ignored_without_streaming(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="mock-gpt", messages=[user("Why is the sky blue? [[mockai:fail-midstream]]")]
    )

    assert completion.choices[0].message.content == SKY_ANSWER
