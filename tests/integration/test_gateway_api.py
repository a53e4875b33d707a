"""The thin path through the gateway, runner, projector and mockai (in one process, real
servers), on every Redis x SQL backend; and bad input getting a clear 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.events import Keys
from tests.eventually import eventually
from tests.integration.inprocess import InProcessStack, in_process_stack


@pytest.fixture
async def stack(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> AsyncIterator[InProcessStack]:
    async with in_process_stack(redis_url, database_url, keys, str(tmp_path)) as running:
        yield running


async def wait_for_status(client: httpx.AsyncClient, task_id: int, status: str) -> dict[str, Any]:
    async def task() -> dict[str, Any]:
        body: dict[str, Any] = (await client.get(f"/api/tasks/{task_id}")).json()
        return body

    return await eventually(
        task,
        until=lambda body: body["status"] == status,
        within=5,
        message=f"task {task_id} never reached {status!r}",
    )


async def test_a_created_task_is_readable_at_once(stack: InProcessStack) -> None:
    created = await stack.client.post(
        "/api/tasks", json={"title": "Why is the sky blue?", "description": "Explain."}
    )
    assert created.status_code == 201
    task = created.json()
    assert (task["title"], task["description"], task["status"]) == (
        "Why is the sky blue?",
        "Explain.",
        "new",
    )
    # read-your-writes: the next GETs already show it
    assert (await stack.client.get(f"/api/tasks/{task['id']}")).json()["title"] == task["title"]
    listed = (await stack.client.get("/api/tasks")).json()["tasks"]
    assert [t["id"] for t in listed] == [task["id"]]


async def test_a_run_answers_the_task_and_moves_it_to_done(stack: InProcessStack) -> None:
    task = (await stack.client.post("/api/tasks", json={"title": "Why is the sky blue?"})).json()
    accepted = await stack.client.post("/run-agents", json={"id": task["id"]})
    assert accepted.status_code == 202
    run = accepted.json()
    assert run["task_id"] == task["id"]
    assert run["status"] == "queued"
    assert run["fence"] == 1
    assert run["events_url"] == f"/events/tasks/{task['id']}"

    done = await wait_for_status(stack.client, task["id"], "done")
    assert "blue" in done["last_answer"]
    assert [r["run_id"] for r in done["run_history"]] == [run["run_id"]]
    await stack.wait_for_event(task["id"], "lock.released")
    types = await stack.event_types(task["id"])
    assert types[:5] == [
        "task.created",
        "lock.acquired",
        "run.requested",
        "run.started",
        "retrieval.done",
    ]
    assert types[-2:] == ["run.completed", "lock.released"]
    assert set(types[5:-2]) == {"llm.delta"}
    activity = await stack.wait_for_activity(task["id"], "lock.released")
    assert activity == [
        "task.created",
        "lock.acquired",
        "run.requested",
        "run.started",
        "retrieval.done",
        "run.completed",
        "lock.released",
    ]


BAD_TASK_BODIES = [
    (b"", "empty"),
    (b"{not json", "not valid JSON"),
    (b'{"description": "no title"}', "title"),
    (b'{"title": ""}', "title"),
    (b'{"title": "   "}', "blank"),
    (b'{"title": "x", "owner": "me"}', "owner"),
    (b'{"title": 42}', "Expected `str`"),
]


async def test_a_bad_task_body_gets_a_422_that_says_what_is_wrong(stack: InProcessStack) -> None:
    for body, message in BAD_TASK_BODIES:
        reply = await stack.client.post(
            "/api/tasks", content=body, headers={"content-type": "application/json"}
        )
        assert reply.status_code == 422, body
        assert message in reply.json()["error"]["message"], body
    assert (await stack.client.get("/api/tasks")).json()["tasks"] == []


async def test_an_oversized_body_gets_413_and_writes_nothing(stack: InProcessStack) -> None:
    reply = await stack.client.post(
        "/api/tasks", json={"title": "x", "description": "y" * 2_000_000}
    )
    assert reply.status_code == 413
    assert "larger than" in reply.json()["error"]["message"]
    assert (await stack.client.get("/api/tasks")).json()["tasks"] == []


BAD_RUN_REQUESTS = [
    ({"id": 999}, 404, "task 999 does not exist"),
    ({"id": "7"}, 422, "Expected `int`"),
    ({}, 422, "missing required field `id`"),
    ({"id": 1, "colour": "red"}, 422, "colour"),
    ({"id": 1, "query": "q" * 4001}, 422, "length <= 4000"),
    ({"id": 0}, 422, ">= 1"),
    ({"id": 1.5}, 422, "Expected `int`"),
]


async def test_a_bad_run_request_gets_a_clear_error(stack: InProcessStack) -> None:
    for body, status, message in BAD_RUN_REQUESTS:
        reply = await stack.client.post("/run-agents", json=body)
        assert reply.status_code == status, body
        assert message in reply.json()["error"]["message"], body
    bad_wait = await stack.client.post("/run-agents?wait=forever", json={"id": 1})
    assert bad_wait.status_code == 422
    assert "wait must be" in bad_wait.json()["error"]["message"]


async def test_unknown_task_and_route_are_json_404s(stack: InProcessStack) -> None:
    assert (await stack.client.get("/api/tasks/404")).status_code == 404
    assert (await stack.client.get("/events/tasks/404")).status_code == 404
    missing = await stack.client.get("/no/such/page")
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == 404
    assert (await stack.client.get("/api/tasks/abc")).status_code == 422


async def test_health_ready_and_metrics_answer(stack: InProcessStack) -> None:
    assert (await stack.client.get("/health")).json() == {"status": "ok"}
    ready = (await stack.client.get("/ready")).json()
    assert ready == {"status": "ok", "redis": "ok", "database": "ok", "hub": "ok"}
    await stack.client.post("/api/tasks", json={"title": "counted"})
    metrics = (await stack.client.get("/metrics")).text
    assert "ragpoc_tasks_created_total" in metrics


async def test_an_idle_event_stream_sends_heartbeats_and_stays_open(
    redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with in_process_stack(
        redis_url, database_url, keys, str(tmp_path), sse_heartbeat_s=6.0
    ) as stack:
        task = (await stack.client.post("/api/tasks", json={"title": "quiet"})).json()
        lines: list[str] = []
        async with stack.client.stream("GET", f"/events/tasks/{task['id']}") as response:
            async for line in response.aiter_lines():
                lines.append(line)
                # 6 s of silence: longer than redis-py's default 5 s socket timeout, which
                # would break a blocked XREAD on a default client
                if lines.count(": heartbeat") == 1:
                    break
    assert "retry: 2000" in lines
    assert "event: task.created" in lines
