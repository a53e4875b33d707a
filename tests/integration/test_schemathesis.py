"""The live gateway against its own OpenAPI document: schemathesis (`st run`) sends every
operation generated valid and invalid requests, and every answer must be no 5xx, with a
documented status, the documented content type, headers and a body of the documented schema;
a protected operation must refuse the same request without credentials.

The stack is the in-process one (real uvicorn, projector, runner, ingestor, mockai) with an
API token configured, so the run goes through authentication as a client does. Each run is
bounded: a fixed seed, at most a few dozen cases per operation, a request timeout.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from libs.events import Keys
from tests.integration.inprocess import InProcessStack, in_process_stack

SECRET = secrets.token_urlsafe(24)
SEED = 20261129
CHECKS = (
    "ignored_auth",  # a protected operation refuses the request without its credentials
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",  # for event streams: each event and its JSON `data`
)
EVENT_STREAMS = "^/events"
RUN_BOUND_S = 240

# One backend pair is enough for a contract test (the fuzzing is the slow part): PostgreSQL,
# which refuses more input than SQLite, and the embedded Valkey.
pytestmark = [
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
    pytest.mark.parametrize("redis_url", ["valkey"], indirect=True),
]


@pytest.fixture
async def stack(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> AsyncIterator[InProcessStack]:
    async with in_process_stack(
        redis_url, database_url, keys, str(tmp_path), api_tokens=f"fuzz:write:{SECRET}"
    ) as running:
        running.client.headers["Authorization"] = f"Bearer {SECRET}"
        # a few tasks (ids 1 to 3): generated ids and event streams find something
        for title in ("Why is the sky blue?", "What is a fence token?", "Who reads the log?"):
            await running.new_task(title)
        yield running


async def schemathesis(stack: InProcessStack, report: Path, *options: str) -> dict[str, Any]:
    """`st run` against the stack's /openapi.json; its JSON report, with its console output
    (the failing cases and how to reproduce them) under "output"."""
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{stack.settings.gateway_url}/openapi.json",
        *("--checks", ",".join(CHECKS), "--mode", "all", "--seed", str(SEED)),
        *("--phases", "examples,coverage,fuzzing", "--workers", "2"),
        *("--header", f"Authorization: Bearer {SECRET}", "--no-color"),
        *("--report", "json", "--report-json-path", str(report)),
        *options,
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_BOUND_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    result: dict[str, Any] = json.loads(await asyncio.to_thread(report.read_text))
    result["output"] = output.decode(errors="replace")
    result["returncode"] = process.returncode
    return result


def assert_clean(run: dict[str, Any], operations: int, cases: int) -> None:
    output = run["output"]
    assert run["complete"], output
    assert run["operations"]["errored"] == 0, output
    assert not run["errors"], output
    assert run["operations"]["tested"] == run["operations"]["selected"] == operations, output
    assert run["test_cases"]["generated"] >= cases, output
    assert run["failures"] == [], output
    assert run["returncode"] == 0, output


async def test_every_operation_answers_as_documented(stack: InProcessStack, tmp_path: Path) -> None:
    reply = await stack.client.post(
        "/api/ingest?wait=10", json={"text": "The sky is blue because of Rayleigh scattering."}
    )
    assert reply.status_code == 200, reply.text  # so a search finds something
    run = await schemathesis(
        stack,
        tmp_path / "report.json",
        *("--exclude-path-regex", EVENT_STREAMS, "--max-examples", "50"),
        # `?wait` may follow a run or a batch to its end: seconds, on this stack
        *("--request-timeout", "20"),
    )
    assert_clean(run, operations=17, cases=17 * 25)


async def test_every_event_stream_answers_as_documented(
    stack: InProcessStack, tmp_path: Path
) -> None:
    """An event stream does not end by itself: schemathesis reads each for the request
    timeout (1 s), then checks the events that came (the replay of a task's stream)."""
    run = await schemathesis(
        stack,
        tmp_path / "report.json",
        *("--include-path-regex", EVENT_STREAMS, "--max-examples", "15"),
        *("--request-timeout", "1"),
    )
    assert_clean(run, operations=2, cases=2 * 15)


async def first_frame(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """The answer's status and headers and the first chunk of its body; then it hangs up."""
    async with client.stream("GET", url, timeout=5, **kwargs) as reply:
        async for chunk in reply.aiter_bytes():
            reply._content = chunk
            break
        return reply


async def test_an_event_stream_refuses_before_it_opens(stack: InProcessStack) -> None:
    """A bad request to an event stream is a documented 4xx JSON error, never a stream that
    opens and then stops; a good one opens with its `retry:` frame."""
    document = (await stack.client.get("/openapi.json")).json()
    documented = {
        path: {int(status) for status in document["paths"][path]["get"]["responses"]}
        for path in ("/events/tasks/{task_id}", "/events")
    }
    streaming = await first_frame(stack.client, "/events/tasks/1")
    assert streaming.status_code == 200
    assert streaming.headers["content-type"].startswith("text/event-stream")
    assert streaming.content.startswith(b"retry:")

    for path, url, kwargs in [
        ("/events/tasks/{task_id}", "/events/tasks/999999", {}),
        ("/events/tasks/{task_id}", "/events/tasks/1", {"params": {"last_event_id": "abc"}}),
        ("/events/tasks/{task_id}", "/events/tasks/1", {"headers": {"Last-Event-ID": "1-x"}}),
        ("/events", "/events", {"params": {"last_event_id": "99=1-0"}}),
        ("/events", "/events", {"headers": {"Authorization": ""}}),
    ]:
        reply = await first_frame(stack.client, url, **kwargs)
        assert reply.status_code in documented[path], (url, kwargs, reply.status_code)
        assert 400 <= reply.status_code < 500, (url, kwargs, reply.status_code)
        assert reply.headers["content-type"] == "application/json"
        error = msgspec.json.decode(reply.content)["error"]
        assert error["status"] == reply.status_code
        assert error["message"]
