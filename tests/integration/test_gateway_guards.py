"""The real gateway's guards: security headers on the UI, a foreign Host refused, full stream
and waiter slots answered with 503, a token over its run budget with 429. Each leaves nothing
behind: no task, no run, no event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.conftest import StartStack
from tests.integration.inprocess import InProcessStack

WRITE = "writer-secret-0123456789abcdef"


@pytest.fixture
async def stack(gateway_stack: StartStack) -> AsyncIterator[InProcessStack]:
    """The guards sit in front of everything, whichever Redis server and SQL backend."""
    async with gateway_stack(
        api_tokens=f"ops:write:{WRITE}",
        max_sse_clients=1,
        max_waiters=1,
        run_rate_per_minute=2,
    ) as running:
        running.client.headers["Authorization"] = f"Bearer {WRITE}"
        yield running


async def test_the_ui_and_the_api_carry_the_security_headers(stack: InProcessStack) -> None:
    for path in ("/", "/static/js/main.js", "/api/tasks", "/health"):
        reply = await stack.client.get(path)
        assert reply.status_code == 200, path
        assert "script-src 'self'" in reply.headers["content-security-policy"], path
        assert reply.headers["x-content-type-options"] == "nosniff", path


async def test_the_ui_page_has_no_inline_script_the_policy_would_block(
    stack: InProcessStack,
) -> None:
    page = (await stack.client.get("/")).text
    assert "<script>" not in page
    assert " onclick=" not in page
    assert 'type="module" src="/static/js/main.js"' in page


async def test_a_rebound_host_name_is_refused_before_anything_is_done(
    stack: InProcessStack,
) -> None:
    reply = await stack.client.post(
        "/api/tasks", json={"title": "rebound"}, headers={"Host": "attacker.example"}
    )
    assert reply.status_code == 400
    assert "RAGPOC_ALLOWED_HOSTS" in reply.json()["error"]["message"]
    assert (await stack.client.get("/api/tasks")).json()["tasks"] == []


async def test_a_second_stream_over_the_cap_gets_503_with_retry_after(
    stack: InProcessStack,
) -> None:
    task_id = await stack.new_task()
    async with stack.client.stream("GET", f"/events/tasks/{task_id}") as first:
        assert first.status_code == 200
        refused = await stack.client.get(f"/events/tasks/{task_id}")
        assert refused.status_code == 503
        assert refused.headers["retry-after"].isdigit()
        assert refused.json()["error"]["limit"] == 1
    async with asyncio.timeout(10):  # the slot is free again once the stream ended
        while True:
            async with stack.client.stream("GET", f"/events/tasks/{task_id}") as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.05)


async def test_a_token_over_its_run_budget_gets_429_and_no_run(stack: InProcessStack) -> None:
    task_ids = [await stack.new_task(f"task {n}") for n in range(3)]
    answers = [await stack.client.post("/run-agents", json={"id": t}) for t in task_ids]
    assert [a.status_code for a in answers[:2]] == [202, 202]
    refused = answers[2]
    assert refused.status_code == 429, refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "ops" in refused.json()["error"]["message"]
    assert WRITE not in refused.text
    assert "run.requested" not in await stack.event_types(task_ids[2])


async def test_no_credentials_are_needed_to_be_told_the_host_is_wrong(
    stack: InProcessStack,
) -> None:
    anonymous = httpx.AsyncClient(base_url=stack.settings.gateway_url, timeout=10)
    async with anonymous:
        reply = await anonymous.get("/api/tasks", headers={"Host": "attacker.example"})
        assert reply.status_code == 400
        assert (await anonymous.get("/api/tasks")).status_code == 401
