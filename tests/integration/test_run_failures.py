"""A run whose LLM fails (mid-stream, or unreachable) ends in run.failed with the reason, and
releases the task for the next run."""

from __future__ import annotations

from pathlib import Path

from libs.events import Keys, RunFailed
from tests.conftest import free_port
from tests.integration.inprocess import InProcessStack, in_process_stack


async def run_until_failed(stack: InProcessStack, query: str) -> tuple[dict, RunFailed]:  # type: ignore[type-arg]
    task = (await stack.client.post("/api/tasks", json={"title": "doomed"})).json()
    reply = await stack.client.post(
        "/run-agents", params={"wait": 20}, json={"id": task["id"], "query": query}
    )
    assert reply.status_code == 200, reply.text
    events = await stack.store.task_events(task["id"])
    [failed] = [e.event for e in events if isinstance(e.event, RunFailed)]
    return reply.json(), failed


async def test_a_model_failing_mid_stream_ends_the_run_as_failed(
    redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with in_process_stack(redis_url, database_url, keys, str(tmp_path)) as stack:
        body, failed = await run_until_failed(
            stack, "Why is the sky blue? [[mockai:fail-midstream]]"
        )
        assert body["status"] == "failed"
        assert "LLM call failed" in body["error"]
        assert failed.reason == body["error"]
        task = (await stack.client.get(f"/api/tasks/{failed.task_id}")).json()
        assert (task["status"], task["last_error"]) == ("failed", failed.reason)
        await stack.wait_until_released(failed.task_id)  # the failed run releases the task
        again = await stack.client.post("/run-agents", json={"id": failed.task_id})
        assert again.status_code == 202


async def test_an_unreachable_model_ends_the_run_as_failed(
    redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    async with in_process_stack(
        redis_url, database_url, keys, str(tmp_path), runner_llm_url=closed
    ) as stack:
        body, failed = await run_until_failed(stack, "Why is the sky blue?")
    assert body["status"] == "failed"
    assert "APIConnectionError" in failed.reason
