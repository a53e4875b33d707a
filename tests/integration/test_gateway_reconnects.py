"""The gateway rides out Redis going away: its SSE hub keeps following the logs and serving the
clients it has (after CLIENT KILL, and after a restart), `/ready` says what is degraded while
Redis is gone, `/health` stays 200, and an entry the hub cannot decode does not stop it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from libs.events import EventStore, Keys, RunRequested, TaskCreated, connect_redis
from services.gateway.app import create_app as gateway_app
from tests.eventually import eventually
from tests.integration.faults import OwnValkey, blocked_in, own_valkey
from tests.integration.inprocess import serving, stack_settings
from tests.sse_client import sse_frames


@dataclass
class Gateway:
    client: httpx.AsyncClient
    store: EventStore
    valkey: OwnValkey

    async def cut(self) -> None:
        """CLIENT KILL TYPE normal; the test's own client drops its dead connections."""
        assert self.valkey.kill_clients() >= 1
        await self.store.redis.connection_pool.disconnect()

    async def ready(self) -> tuple[int, dict[str, object]]:
        reply = await self.client.get("/ready")
        return reply.status_code, reply.json()


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[OwnValkey]:
    with own_valkey(tmp_path) as server:
        yield server


@pytest.fixture
async def gateway(valkey: OwnValkey, keys: Keys, tmp_path: Path) -> AsyncIterator[Gateway]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    settings = stack_settings(valkey.url, database_url, keys, tmp_path, sse_heartbeat_s=1.0)
    redis = connect_redis(valkey.url)
    try:
        async with (
            serving(gateway_app(settings), settings.gateway_port),
            httpx.AsyncClient(base_url=settings.gateway_url, timeout=10) as client,
        ):
            yield Gateway(client, EventStore(redis, keys), valkey)
    finally:
        await redis.aclose()


async def watch(gateway: Gateway, task_id: int, count: int) -> asyncio.Task[list[dict[str, str]]]:
    """A client of the task's event stream, connected (and subscribed) once this returns; its
    task ends with its first `count` frames."""
    received = asyncio.Event()
    reader = asyncio.create_task(
        sse_frames(gateway.client, f"/events/tasks/{task_id}", count=count, received=received)
    )
    await asyncio.wait_for(received.wait(), 10)
    return reader


def queries(frames: list[dict[str, str]]) -> list[str]:
    return [json.loads(f["data"]).get("query", f["event"]) for f in frames]


async def test_the_hub_keeps_serving_a_client_through_client_kill_and_a_restart(
    gateway: Gateway,
) -> None:
    await gateway.store.append(TaskCreated(task_id=1, title="watched"))
    reader = await watch(gateway, 1, count=3)

    await eventually(lambda: blocked_in(gateway.store.redis, "xread"), message="no hub read")
    await gateway.cut()
    await gateway.store.append(RunRequested(task_id=1, run_id="r1", query="after the kill"))

    gateway.valkey.stop()
    status, body = await eventually(
        gateway.ready,
        until=lambda answer: answer[1].get("degraded") == ["redis", "hub"],
        message="/ready never said the hub stopped following",
    )
    assert status == 503
    assert str(body["redis"]).startswith("unavailable: ")
    assert str(body["hub"]).startswith("not following for ")
    # the kind of error, not its text: no address or port of the server for anyone to read
    port = str(gateway.valkey.port)
    assert port not in str(body["redis"]), body
    assert port not in str(body["hub"]), body
    assert body["database"] == "ok"
    assert (await gateway.client.get("/health")).status_code == 200  # alive all along

    gateway.valkey.start(keep_data=True)
    await gateway.store.redis.connection_pool.disconnect()
    await eventually(
        gateway.ready,
        until=lambda answer: answer[0] == 200,
        within=15,
        message="/ready never recovered",
    )
    assert (await gateway.ready())[1] == {
        "status": "ok",
        "redis": "ok",
        "database": "ok",
        "hub": "ok",
    }
    await gateway.store.append(RunRequested(task_id=1, run_id="r1", query="after the restart"))
    frames = await asyncio.wait_for(reader, 15)
    assert queries(frames) == ["task.created", "after the kill", "after the restart"]


async def test_an_entry_the_hub_cannot_decode_is_skipped(gateway: Gateway, keys: Keys) -> None:
    await gateway.store.append(TaskCreated(task_id=2, title="watched"))
    reader = await watch(gateway, 2, count=2)
    # an event of a newer version (or written by hand) in the task's partition log
    future = {"type": "task.renamed", "task_id": 2, "title": "new"}
    await gateway.store.redis.xadd(
        keys.partition_log(keys.partition_of(2)),
        {"type": "task.renamed", "data": json.dumps(future), "task": "2", "sid": "1-1"},
    )
    await gateway.store.append(RunRequested(task_id=2, run_id="r2", query="after it"))
    frames = await asyncio.wait_for(reader, 15)
    assert queries(frames) == ["task.created", "after it"]


async def test_requests_while_redis_is_down_get_a_503_that_says_to_retry(
    gateway: Gateway,
) -> None:
    gateway.valkey.stop()

    for method, path, body in [
        ("POST", "/api/tasks", {"title": "while Redis is away"}),
        ("POST", "/run-agents", {"id": 1}),
        ("GET", "/events/tasks/1", None),
    ]:
        reply = await gateway.client.request(method, path, json=body)
        assert reply.status_code == 503, (path, reply.text)
        error = reply.json()["error"]
        assert error["dependency"] == "redis"
        assert "retry shortly" in error["message"]
        assert reply.headers["Retry-After"] == "1"

    gateway.valkey.start(keep_data=True)
    created = await eventually(
        lambda: gateway.client.post("/api/tasks", json={"title": "Redis is back"}),
        until=lambda reply: reply.status_code == 201,
        within=15,
    )
    assert created.json()["title"] == "Redis is back"
