"""Hostile requests to the gateway, beyond bodies: declared lengths, Last-Event-ID, query
parameters and paths each get a 4xx with a JSON body that says what was wrong (never a 500, and
never an event stream that opens and then fails)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.requests import Request

from services.gateway.bodies import decode_body
from services.gateway.errors import ApiError
from tests.integration.conftest import StartStack
from tests.integration.hostile_support import (
    error_of,
    no_tasks,
    opening_of,
    queued_ingests,
    raw_post,
)
from tests.integration.inprocess import InProcessStack


@pytest.fixture
async def stack(gateway_stack: StartStack) -> AsyncIterator[InProcessStack]:
    """What the gateway refuses is decided before Redis or the database is asked, so one
    backend pair is enough."""
    async with gateway_stack() as running:
        yield running


async def test_a_huge_declared_content_length_is_a_json_413(stack: InProcessStack) -> None:
    for length in (str(2**64 - 1), str(2**63), "1048577", "0002000000"):
        answer = await raw_post(
            stack,
            "/api/tasks",
            b"Content-Type: application/json\r\nContent-Length: " + length.encode() + b"\r\n",
            b'{"title": "x"}',
        )
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 "), (length, answer[:300])
        assert b"content-type: application/json" in head.lower()
        assert b"larger than" in body
    assert await no_tasks(stack)


async def test_a_malformed_content_length_is_a_400(stack: InProcessStack) -> None:
    """uvicorn's parser refuses these before the gateway sees them (its own plain-text 400);
    a server that passed one on would get the gateway's JSON 400, checked below."""
    for length in ("-1", "1e9", "1,1", "abc", str(2**64)):
        answer = await raw_post(
            stack,
            "/api/tasks",
            b"Content-Type: application/json\r\nContent-Length: " + length.encode() + b"\r\n",
            b'{"title": "x"}',
        )
        assert answer.startswith(b"HTTP/1.1 400 "), (length, answer[:300])
    assert await no_tasks(stack)


@pytest.mark.parametrize(
    ("length", "status"),
    [(b"-1", 400), (b"1e9", 400), (b"\xc2\xb2", 400), (b"abc", 400), (b"9" * 5000, 413)],
)
async def test_a_content_length_that_reaches_the_gateway_is_checked_without_converting_it(
    length: bytes, status: int
) -> None:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b'{"title": "x"}', "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/tasks",
        "headers": [(b"content-type", b"application/json"), (b"content-length", length)],
    }
    with pytest.raises(ApiError) as refused:
        await decode_body(Request(scope, receive), dict, max_bytes=1000)
    assert refused.value.status == status
    assert ("Content-Length" if status == 400 else "larger than") in refused.value.message


# --- event streams ------------------------------------------------------------------------


async def test_an_unparsable_last_event_id_query_is_a_400_before_the_stream(
    stack: InProcessStack,
) -> None:
    task_id = await stack.new_task()
    reply = await opening_of(stack.client, f"/events/tasks/{task_id}?last_event_id=abc")
    assert "Last-Event-ID" in error_of(reply, 400)


async def test_a_last_event_id_with_a_trailing_newline_is_a_400(stack: InProcessStack) -> None:
    task_id = await stack.new_task()
    reply = await opening_of(stack.client, f"/events/tasks/{task_id}?last_event_id=1-0%0A")
    assert "Last-Event-ID" in error_of(reply, 400)


MALFORMED_ENTRY_IDS = [
    "1-",
    "-1",
    "1--1",
    "1-0-0",
    "1 -0",
    "\u0661-\u0660",
    f"{2**64}-0",
    f"0-{2**64}",
    "9" * 5000 + "-0",
]


async def test_every_malformed_last_event_id_is_a_400_on_both_feeds(
    stack: InProcessStack,
) -> None:
    task_id = await stack.new_task()
    for bad in MALFORMED_ENTRY_IDS:
        for url, last_id in ((f"/events/tasks/{task_id}", bad), ("/events", f"0={bad}")):
            header = {b"Last-Event-ID": last_id.encode()}  # UTF-8, unlike httpx's default ASCII
            by_header = await opening_of(stack.client, url, header)
            assert "Last-Event-ID" in error_of(by_header, 400), (url, bad)
            query = httpx.QueryParams(last_event_id=last_id)
            by_query = await opening_of(stack.client, f"{url}?{query}")
            assert "Last-Event-ID" in error_of(by_query, 400), (url, bad)


async def frame_types_within(
    client: httpx.AsyncClient, url: str, last_id: str, seconds: float = 1.0
) -> list[str]:
    """The `event:` of every frame of GET `url` resumed after `last_id` for `seconds`; the
    stream must still be open then (not ended by an error after its 200)."""
    types: list[str] = []

    async def read(reply: httpx.Response) -> None:
        async for line in reply.aiter_lines():
            if line.startswith("event: "):
                types.append(line.removeprefix("event: "))

    async with client.stream("GET", url, headers={"Last-Event-ID": last_id}) as reply:
        assert reply.status_code == 200, (url, last_id)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(read(reply), seconds)
    return types


async def test_entry_ids_up_to_the_largest_are_resume_points_that_work(
    stack: InProcessStack,
) -> None:
    task_id = await stack.new_task()
    partition = stack.store.keys.partition_of(task_id)
    largest, huge_seq = f"{2**64 - 1}-{2**64 - 1}", f"1-{2**64 - 1}"
    task_stream = f"/events/tasks/{task_id}"
    assert await frame_types_within(stack.client, task_stream, largest) == []
    assert await frame_types_within(stack.client, task_stream, huge_seq) == ["task.created"]
    feed = "/events"
    assert await frame_types_within(stack.client, feed, f"{partition}={largest}") == []
    resumed = await frame_types_within(stack.client, feed, f"{partition}={huge_seq}")
    assert resumed == ["task.created"]


NOT_FEED_POSITIONS = ["garbage", "4=1-0", "x=1-0", "0=1-0,,", "0=1-0,0=2-0", "=1-0", "0:1-0"]


async def test_a_feed_position_of_the_wrong_shape_is_a_400(stack: InProcessStack) -> None:
    for bad in NOT_FEED_POSITIONS:  # the stack has 4 partitions
        reply = await opening_of(stack.client, "/events", {"Last-Event-ID": bad})
        assert "Last-Event-ID" in error_of(reply, 400), bad
    newline = await opening_of(stack.client, "/events?last_event_id=0%3D1-0%0A")
    assert "Last-Event-ID" in error_of(newline, 400)


async def test_an_unknown_from_on_the_feed_is_a_422(stack: InProcessStack) -> None:
    reply = await opening_of(stack.client, "/events?from=begin")
    assert "from" in error_of(reply, 422)


# --- query parameters ---------------------------------------------------------------------


NOT_COUNTS = [
    "",
    "abc",
    "nan",
    "NaN",
    "inf",
    "-1",
    "0",
    "1.5",
    "1e3",
    "\u00b2",
    "\u0661",
    str(10**30),
]


async def test_a_limit_that_is_not_a_count_in_range_is_a_422(stack: InProcessStack) -> None:
    task_id = await stack.new_task()
    for raw in [*NOT_COUNTS, "5001"]:
        for path in (f"/api/tasks/{task_id}/locks", "/api/tasks"):
            reply = await stack.client.get(path, params={"limit": raw})
            assert "limit" in error_of(reply, 422), (path, raw)
    twice = await stack.client.get("/api/tasks?limit=1&limit=2")
    assert "limit" in error_of(twice, 422)


NOT_SECONDS = [
    "",
    "abc",
    "nan",
    "inf",
    "-inf",
    "-1",
    "0",
    "0.0",
    "1e400",
    "1e",
    "\u00b2",
    "0x10",
    "301",
]


async def test_a_wait_that_is_not_a_number_of_seconds_in_range_is_a_422(
    stack: InProcessStack,
) -> None:
    task_id = await stack.new_task()
    for raw in NOT_SECONDS:
        run = await stack.client.post("/run-agents", params={"wait": raw}, json={"id": task_id})
        assert "wait" in error_of(run, 422), raw
        ingest = await stack.client.post("/api/ingest", params={"wait": raw}, json={"text": "x"})
        assert "wait" in error_of(ingest, 422), raw
    assert await queued_ingests(stack) == 0
    assert await stack.event_types(task_id) == ["task.created"]
    for raw in ("5e-324", "1E-3", "0.0011774784514734", ".001", "2."):
        ingest = await stack.client.post("/api/ingest", params={"wait": raw}, json={"text": "x"})
        assert ingest.status_code in (200, 202), (raw, ingest.text)


async def test_an_activity_after_that_is_not_an_entry_id_is_a_422(stack: InProcessStack) -> None:
    task_id = await stack.new_task()
    for raw in ["", "abc", "1-0\n", "-1-0", *MALFORMED_ENTRY_IDS]:
        reply = await stack.client.get(f"/api/tasks/{task_id}/activity", params={"after": raw})
        assert "after" in error_of(reply, 422), raw


async def test_a_status_filter_that_is_not_a_status_is_a_422(stack: InProcessStack) -> None:
    for raw in ["done\x00", "NEW", "new\n", "x" * 5000]:
        reply = await stack.client.get("/api/tasks", params={"status": raw})
        assert "status" in error_of(reply, 422), raw


# --- paths --------------------------------------------------------------------------------


ODD_PATHS = [
    "/api/tasks/%C3%A9",
    "/api/tasks/%FF",
    "/api/tasks/%00",
    "/api/tasks/1%0A",
    "/api/tasks/" + "a" * 20_000,
    "/%FF%FE",
    "/events/tasks/%E2%80%AE1",
    "/api/tasks/1/activity/extra",
]


async def test_odd_paths_get_a_json_4xx(stack: InProcessStack) -> None:
    for path in ODD_PATHS:
        reply = await opening_of(stack.client, path)
        error_of(reply, (404, 422))
