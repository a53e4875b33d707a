"""mockai's latency: settings and profiles, per-request headers, and the waits themselves.

Timings are checked as lower bounds only (a busy machine makes everything slower, never
faster). The in-process transport hands the client a streamed body only once it is complete,
so stream timings are taken where the app sends each chunk (:class:`SendClock`).
"""

from __future__ import annotations

import json
import time
from itertools import pairwise
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.common.settings import SettingsError
from services.mockai import create_app
from services.mockai.latency import PROFILES, Latency, for_request
from services.mockai.settings import MockaiSettings
from tests.unit.mockai_client import SKY_ANSWER, user

SKY_QUESTION = "Why is the sky blue?"
SLACK_S = 0.01  # asyncio may wake a timer up to its clock's resolution early


class SendClock:
    """An ASGI app around another that notes when each piece of the body leaves it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.sent: list[tuple[float, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def noting_send(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                self.sent.append((time.monotonic(), message["body"]))
            await send(message)

        await self.app(scope, receive, noting_send)

    def events(self, since: float) -> list[tuple[float, dict[str, Any]]]:
        """Each SSE data event but ``[DONE]``, with the seconds from `since` to its sending."""
        return [
            (at - since, json.loads(event.removeprefix("data: ")))
            for at, body in self.sent
            for event in body.decode().split("\n\n")
            if event.startswith("data: {")
        ]


async def timed_stream(
    path: str,
    body: dict[str, Any],
    settings: MockaiSettings | None = None,
    headers: dict[str, str] | None = None,
) -> list[tuple[float, dict[str, Any]]]:
    """POST a streamed request; its events, each with the seconds since the request."""
    clock = SendClock(create_app(settings))
    transport = httpx.ASGITransport(app=clock, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://mockai.test") as http:
        start = time.monotonic()
        response = await http.post(path, json={**body, "stream": True}, headers=headers)
    assert response.status_code == 200
    return clock.events(start)


async def timed_post(
    path: str,
    body: dict[str, Any],
    settings: MockaiSettings | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[float, httpx.Response]:
    """POST a request; the seconds it took, and the response."""
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://mockai.test") as http:
        start = time.monotonic()
        response = await http.post(path, json=body, headers=headers)
        return time.monotonic() - start, response


def chat(question: str = SKY_QUESTION, **params: Any) -> dict[str, Any]:
    return {"model": "mock-gpt", "messages": [user(question)], **params}


def content_times(events: list[tuple[float, dict[str, Any]]]) -> list[float]:
    return [
        at
        for at, event in events
        if event["choices"] and event["choices"][0]["delta"].get("content")
    ]


def test_latency_defaults_to_none_at_all() -> None:
    assert MockaiSettings.from_env({}).latency == Latency(0.0, 0.0, 0.0)


def test_profile_sets_every_part() -> None:
    settings = MockaiSettings.from_env({"MOCKAI_PROFILE": "hosted-small"})

    assert settings.latency == Latency(ttft_s=0.4, tokens_per_s=80.0, embed_s=0.03)
    assert MockaiSettings.from_env({"MOCKAI_PROFILE": "instant"}).latency == Latency()


def test_explicit_variables_win_over_the_profile() -> None:
    environ = {"MOCKAI_PROFILE": "hosted-small", "MOCKAI_TTFT_MS": "0", "MOCKAI_EMBED_MS": "5"}

    assert MockaiSettings.from_env(environ).latency == Latency(0.0, 80.0, 0.005)
    assert MockaiSettings.from_env({"MOCKAI_TOKENS_PER_S": "12.5"}).latency == Latency(0, 12.5, 0)


def test_unknown_profile_is_a_settings_error_listing_the_known_ones() -> None:
    with pytest.raises(SettingsError, match="MOCKAI_PROFILE") as caught:
        MockaiSettings.from_env({"MOCKAI_PROFILE": "warp-speed"})

    assert "warp-speed" in str(caught.value)
    assert all(name in str(caught.value) for name in PROFILES)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MOCKAI_TTFT_MS", "-1"),
        ("MOCKAI_TTFT_MS", "soon"),
        ("MOCKAI_TOKENS_PER_S", "inf"),
        ("MOCKAI_EMBED_MS", "nan"),
    ],
)
def test_malformed_latency_variable_is_a_settings_error_naming_it(
    variable: str, value: str
) -> None:
    with pytest.raises(SettingsError, match=variable):
        MockaiSettings.from_env({variable: value})


def test_headers_override_the_server_latency() -> None:
    server = Latency(ttft_s=1.0, tokens_per_s=10.0, embed_s=0.5)

    assert for_request(server, Headers({})) == server
    assert for_request(server, Headers({"x-mockai-ttft-ms": "250"})) == Latency(0.25, 10.0, 0.5)
    assert for_request(server, Headers({"X-Mockai-Profile": "instant"})) == Latency()
    both = Headers({"X-Mockai-Profile": "hosted-small", "X-Mockai-Tokens-Per-S": "0"})
    assert for_request(server, both) == Latency(0.4, 0.0, 0.03)
    assert for_request(server, Headers({"X-Mockai-Embed-Ms": ""})) == server


@pytest.mark.parametrize(
    ("path", "header", "value"),
    [
        ("/v1/chat/completions", "X-Mockai-TTFT-Ms", "soon"),
        ("/v1/chat/completions", "X-Mockai-TTFT-Ms", "-1"),
        ("/v1/chat/completions", "X-Mockai-Tokens-Per-S", "inf"),
        ("/v1/completions", "X-Mockai-Tokens-Per-S", "nan"),
        ("/v1/embeddings", "X-Mockai-Embed-Ms", "-0.5"),
        ("/v1/embeddings", "X-Mockai-Profile", "warp-speed"),
    ],
)
async def test_malformed_header_is_an_openai_shaped_400_naming_it(
    http: httpx.AsyncClient, path: str, header: str, value: str
) -> None:
    body = {"model": "mock-gpt", "messages": [user("hi")], "prompt": "hi", "input": "hi"}

    response = await http.post(path, json=body, headers={header: value})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == header
    assert header in error["message"]
    assert repr(value) in error["message"]


async def test_unknown_profile_header_lists_the_known_ones(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/chat/completions", json=chat(), headers={"X-Mockai-Profile": "warp-speed"}
    )

    assert response.status_code == 400
    assert all(name in response.json()["error"]["message"] for name in PROFILES)


async def test_stream_sends_the_role_at_once_and_waits_ttft_for_the_first_content() -> None:
    events = await timed_stream("/v1/chat/completions", chat(), MockaiSettings(ttft_ms=200))

    role_at = events[0][0]
    assert events[0][1]["choices"][0]["delta"] == {"role": "assistant"}
    first_content_at = content_times(events)[0]
    assert first_content_at >= 0.2 - SLACK_S
    assert first_content_at - role_at >= 0.2 - SLACK_S
    text = "".join(event["choices"][0]["delta"].get("content") or "" for _, event in events)
    assert text == SKY_ANSWER


async def test_stream_paces_tokens_at_the_header_rate() -> None:
    events = await timed_stream(
        "/v1/chat/completions", chat(max_tokens=6), headers={"X-Mockai-Tokens-Per-S": "20"}
    )

    times = content_times(events)
    assert len(times) == 6
    assert times[-1] - times[0] >= 5 / 20 - SLACK_S
    assert all(later - earlier >= 1 / 20 - SLACK_S for earlier, later in pairwise(times))


async def test_streamed_text_completion_waits_ttft_then_paces() -> None:
    settings = MockaiSettings(ttft_ms=100, tokens_per_s=50)
    events = await timed_stream(
        "/v1/completions", {"model": "mock-gpt", "prompt": "Sky?"}, settings
    )

    times = [at for at, event in events if event["choices"] and event["choices"][0]["text"]]
    assert times[0] >= 0.1 - SLACK_S
    assert times[-1] - times[0] >= (len(times) - 1) / 50 - SLACK_S


async def test_midstream_fault_still_aborts_a_paced_stream() -> None:
    events = await timed_stream(
        "/v1/chat/completions",
        chat(f"{SKY_QUESTION} [[mockai:fail-midstream]]"),
        MockaiSettings(ttft_ms=100, tokens_per_s=20),
    )

    deltas = [event["choices"][0]["delta"].get("content") for _, event in events]
    assert deltas == [None, "The ", "sky "]
    assert events[-1][0] >= 0.1 + 1 / 20 - SLACK_S


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", chat()),
        ("/v1/completions", {"model": "mock-gpt", "prompt": SKY_QUESTION}),
    ],
)
async def test_plain_completion_waits_as_long_as_its_stream_would(
    path: str, body: dict[str, Any]
) -> None:
    elapsed, response = await timed_post(path, body, MockaiSettings(ttft_ms=100, tokens_per_s=40))

    assert response.status_code == 200
    tokens = response.json()["usage"]["completion_tokens"]
    assert tokens > 1
    assert elapsed >= 0.1 + (tokens - 1) / 40 - SLACK_S


async def test_embeddings_wait_the_embed_latency_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOCKAI_EMBED_MS", "150")
    body = {"model": "mock-embedding", "input": ["one", "two"]}

    elapsed, response = await timed_post("/v1/embeddings", body)
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2
    assert elapsed >= 0.15 - SLACK_S

    elapsed, _ = await timed_post("/v1/embeddings", body, headers={"X-Mockai-Embed-Ms": "120"})
    assert elapsed >= 0.12 - SLACK_S
