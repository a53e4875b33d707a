"""Hostile input to the gateway, ids and bodies: every malformed request gets a 4xx with a
JSON body that says what was wrong (never a 500), and nothing is written (no task, no run, no
queued document). Event streams, query parameters and paths: test_hostile_requests.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.exc import DataError
from starlette.requests import Request

from services.gateway.errors import data_error_handler
from services.gateway.validation import MAX_JSON_DEPTH, nesting_depth_exceeds
from tests.integration.conftest import StartStack
from tests.integration.hostile_support import JSON, error_of, no_tasks, opening_of, queued_ingests
from tests.integration.inprocess import InProcessStack

TOO_BIG_FOR_BIGINT = 2**63  # one past the largest id a signed 64-bit column holds


@pytest.fixture
async def stack(gateway_stack: StartStack, database_url: str) -> AsyncIterator[InProcessStack]:
    """What the gateway refuses is decided before Redis is asked. Both SQL backends stay:
    nothing half-written may reach either."""
    async with gateway_stack(database_url) as running:
        yield running


# --- ids ----------------------------------------------------------------------------------


async def test_a_run_for_an_id_beyond_64_bits_is_a_422(stack: InProcessStack) -> None:
    for task_id in (18446744073709551616, TOO_BIG_FOR_BIGINT, 10**400):
        reply = await stack.client.post("/run-agents", json={"id": task_id})
        assert "<= 9223372036854775807" in error_of(reply, 422), task_id
    largest = await stack.client.post("/run-agents", json={"id": 2**63 - 1})
    assert "does not exist" in error_of(largest, 404)


async def test_a_unicode_digit_as_task_id_is_a_422(stack: InProcessStack) -> None:
    for path in ("/api/tasks/\u00b2", "/api/tasks/\u0661\u0662", "/api/tasks/\uff11"):
        assert "task id" in error_of(await stack.client.get(path), 422), path


async def test_a_task_id_of_5000_digits_is_a_422(stack: InProcessStack) -> None:
    reply = await stack.client.get("/api/tasks/" + "9" * 5000)
    assert "task id" in error_of(reply, 422)


BAD_PATH_IDS = [
    "0",
    "00",
    "-1",
    "+1",
    "1.0",
    "1e3",
    "0x1",
    str(TOO_BIG_FOR_BIGINT),
    "%00",
    "\u00b2",
]


async def test_every_path_that_takes_a_task_id_refuses_a_bad_one(stack: InProcessStack) -> None:
    for raw in BAD_PATH_IDS:
        for template in (
            "/api/tasks/{}",
            "/api/tasks/{}/activity",
            "/api/tasks/{}/locks",
            "/events/tasks/{}",
        ):
            reply = await opening_of(stack.client, template.format(raw))
            assert "task id" in error_of(reply, 422), (template, raw)


async def test_the_largest_64_bit_task_id_is_simply_not_found(stack: InProcessStack) -> None:
    largest = 2**63 - 1
    for template in ("/api/tasks/{}", "/api/tasks/{}/activity", "/api/tasks/{}/locks"):
        reply = await stack.client.get(template.format(largest))
        assert "does not exist" in error_of(reply, 404), template
    events = await opening_of(stack.client, f"/events/tasks/{largest}")
    assert "does not exist" in error_of(events, 404)


# --- bodies -------------------------------------------------------------------------------


async def test_json_nested_100000_deep_is_refused_before_decoding(stack: InProcessStack) -> None:
    deep = b'{"text": "x", "metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    reply = await stack.client.post("/api/ingest", content=deep, headers=JSON)
    assert "nested" in error_of(reply, (400, 422))
    assert await queued_ingests(stack) == 0
    for path in ("/api/tasks", "/run-agents", "/api/search"):
        reply = await stack.client.post(path, content=b"[" * 100_000, headers=JSON)
        assert "nested" in error_of(reply, (400, 422)), path


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 40 + b'"\\' * 500_000,  # one unterminated string of escaped quotes
        b"[" * 40 + b'"' * 1_000_000,
        b'[1, "' + b"[" * 1_000_000,
        b"[]" * 500_000,
    ],
)
def test_the_nesting_check_takes_linear_time_on_any_body(body: bytes) -> None:
    started = time.perf_counter()
    nesting_depth_exceeds(body, MAX_JSON_DEPTH)
    assert time.perf_counter() - started < 2.0  # ~0.1 s; a quadratic scan takes minutes


async def test_nesting_within_the_bound_is_accepted(stack: InProcessStack) -> None:
    metadata: Any = "leaf"
    for _ in range(20):
        metadata = {"k": metadata}
    reply = await stack.client.post("/api/ingest", json={"text": "deep", "metadata": metadata})
    assert reply.status_code == 202, reply.text
    brackets = '[{"\\"' * 1000  # inside a string: text, not nesting
    reply = await stack.client.post("/api/ingest", json={"text": brackets, "title": "]}" * 50})
    assert reply.status_code == 202, reply.text


async def test_a_json_endpoint_refuses_a_body_that_is_not_json_with_415(
    stack: InProcessStack,
) -> None:
    body = b'{"title": "sent as text"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "json", None):
        headers = {"content-type": content_type} if content_type else {}
        for path in ("/api/tasks", "/run-agents", "/api/ingest", "/api/search"):
            reply = await stack.client.post(path, content=body, headers=headers)
            assert "application/json" in error_of(reply, 415), (path, content_type)
    assert await no_tasks(stack)


async def test_json_media_types_with_parameters_or_a_json_suffix_are_accepted(
    stack: InProcessStack,
) -> None:
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/merge-patch+json",
    ):
        reply = await stack.client.post(
            "/api/tasks", content=b'{"title": "typed"}', headers={"content-type": content_type}
        )
        assert reply.status_code == 201, (content_type, reply.text)


async def test_a_nul_in_a_title_is_a_422_naming_the_field(stack: InProcessStack) -> None:
    reply = await stack.client.post("/api/tasks", json={"title": "a\u0000b"})
    assert "$.title" in error_of(reply, 422)
    assert await no_tasks(stack)


CONTROL_CHARACTERS = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f"]


def control_character_cases(bad: str) -> list[tuple[str, dict[str, Any], str]]:
    """(path, body, the field the error names) with `bad` in every text field of every body."""
    return [
        ("/api/tasks", {"title": "ok", "description": bad}, "$.description"),
        ("/run-agents", {"id": 1, "query": bad}, "$.query"),
        ("/run-agents", {"id": 1, "title": bad}, "$.title"),
        ("/api/ingest", {"text": bad}, "$.text"),
        ("/api/ingest", {"documents": [{"text": "ok"}, {"text": "ok", "source": bad}]}, "[1]"),
        ("/api/ingest", {"text": "ok", "metadata": {"tags": ["x", bad]}}, "$.metadata.tags[1]"),
        ("/api/ingest", {"text": "ok", "metadata": {bad: 1}}, "$.metadata"),
        ("/api/search", {"query": bad}, "$.query"),
    ]


async def test_control_characters_are_refused_in_every_text_field(stack: InProcessStack) -> None:
    for char in CONTROL_CHARACTERS:
        for path, body, where in control_character_cases(f"a{char}b"):
            reply = await stack.client.post(path, json=body)
            message = error_of(reply, 422)
            assert "control character" in message, (path, body, message)
            assert where in message, (path, body, message)
    assert await no_tasks(stack)
    assert await queued_ingests(stack) == 0


async def test_a_document_the_ingestor_would_clean_to_nothing_is_blank(
    stack: InProcessStack,
) -> None:
    for text in ("\u0085", "\ufeff \u2028", "\u009f\n\t"):
        reply = await stack.client.post("/api/ingest", json={"text": text})
        assert "text is blank" in error_of(reply, 422), text
    assert await queued_ingests(stack) == 0


async def test_tabs_newlines_and_other_unicode_are_kept(stack: InProcessStack) -> None:
    text = "line one\n\tline two\r\nnaïve ☃ 𝄞 \u200b"
    reply = await stack.client.post("/api/tasks", json={"title": "t\tab", "description": text})
    assert reply.status_code == 201, reply.text
    assert reply.json()["description"] == text


NOT_A_TASK = [
    (b"\xff\xfe{}", "not valid JSON"),
    (b'{"title": "\xc3\x28"}', "not valid JSON"),
    (b"   ", "empty"),
    (b"null", "Expected `object`"),
    (b'["title"]', "Expected `object`"),
    (b'{"title": ["a"]}', "Expected `str`"),
    (b'{"title": {"a": 1}}', "Expected `str`"),
    (b'{"title": "a", "title": 5}', "Expected `str`"),
    (b'{"title": "a"} trailing', "not valid JSON"),
    (b'{"title": "\\ud800"}', "not valid JSON"),
    (b'{"title": 1e999}', "not valid JSON"),
]


async def test_a_body_that_is_not_the_expected_json_object_is_a_422(
    stack: InProcessStack,
) -> None:
    for body, message in NOT_A_TASK:
        reply = await stack.client.post("/api/tasks", content=body, headers=JSON)
        assert message in error_of(reply, 422), body
    assert await no_tasks(stack)


NOT_A_RUN_REQUEST = [
    b'{"id": true}',
    b'{"id": 1e300}',
    b'{"id": 1e999}',
    b'{"id": NaN}',
    b'{"id": -1180591620717411303424}',
    b'{"id": [1]}',
    b'{"id": {"id": 1}}',
    b'{"id": null}',
    b'{"id": 1, "hold_seconds": "nan"}',
    b'{"id": 1, "hold_seconds": 1e999}',
    b'{"id": 1, "hold_seconds": -1}',
    b'[{"id": 1}]',
    b'"id"',
    b"1",
]


async def test_a_run_request_of_the_wrong_shape_is_a_422(stack: InProcessStack) -> None:
    task_id = await stack.new_task()
    for body in NOT_A_RUN_REQUEST:
        reply = await stack.client.post("/run-agents", content=body, headers=JSON)
        error_of(reply, 422)
    assert await stack.event_types(task_id) == ["task.created"]


# --- answers to what gets past the checks -------------------------------------------------


async def test_a_value_the_database_refuses_is_a_422_not_a_retry() -> None:
    refused = DataError("INSERT ...", {}, Exception("value out of range for type bigint"))
    request = Request({"type": "http", "method": "POST", "path": "/api/tasks", "headers": []})
    reply = await data_error_handler(request, refused)
    assert reply.status_code == 422
    assert "Retry-After" not in reply.headers
    assert b"database refused a value" in reply.body
