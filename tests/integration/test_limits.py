"""Resource limits: a full gateway says 503 with Retry-After at once; a token over its run
budget gets 429 with Retry-After, counted in Redis so replicas share it."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Scope

from services.gateway.limits import ConcurrencyCaps, RunRateLimit


class Held:
    """Endpoints that stay open until `release` is set, like an SSE stream or a ?wait."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0
        self.arrived = asyncio.Condition()

    async def enter(self) -> None:
        async with self.arrived:
            self.entered += 1
            self.arrived.notify_all()

    async def stream(self, _request: Request) -> Response:
        async def body():  # type: ignore[no-untyped-def]
            await self.enter()
            yield b": open\n\n"
            await self.release.wait()

        return StreamingResponse(body(), media_type="text/event-stream")

    async def run(self, request: Request) -> Response:
        if "wait" in request.query_params:
            await self.enter()
            await self.release.wait()
        return JSONResponse({"status": "queued"}, 202)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/events/tasks/{task_id}", self.stream),
                Route("/run-agents", self.run, methods=["POST"]),
            ]
        )


def client_of(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


async def until_entered(held: Held, count: int) -> None:
    async with asyncio.timeout(5), held.arrived:
        await held.arrived.wait_for(lambda: held.entered >= count)


async def test_a_stream_over_the_cap_gets_a_503_and_a_freed_slot_is_reused() -> None:
    held = Held()
    async with client_of(ConcurrencyCaps(held.app(), max_streams=2, max_waiters=0)) as client:
        open_streams = [asyncio.create_task(client.get(f"/events/tasks/{n}")) for n in (1, 2)]
        await until_entered(held, 2)
        refused = await client.get("/events/tasks/3")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert "2 event streams" in refused.json()["error"]["message"]
        held.release.set()
        await asyncio.gather(*open_streams)
        held.release.clear()
        again = asyncio.create_task(client.get("/events/tasks/3"))
        await until_entered(held, 3)
        held.release.set()
        assert (await again).status_code == 200


async def test_waiters_have_their_own_cap_and_plain_runs_pass() -> None:
    held = Held()
    async with client_of(ConcurrencyCaps(held.app(), max_streams=0, max_waiters=1)) as client:
        waiting = asyncio.create_task(client.post("/run-agents?wait=30", json={"id": 1}))
        await until_entered(held, 1)
        refused = await client.post("/run-agents?wait=30", json={"id": 2})
        assert refused.status_code == 503
        assert "waiting run requests" in refused.json()["error"]["message"]
        assert (await client.post("/run-agents", json={"id": 3})).status_code == 202
        held.release.set()
        assert (await waiting).status_code == 202


@pytest.fixture
async def redis(redis_url: str) -> aioredis.Redis:
    client = aioredis.Redis.from_url(redis_url)
    yield client  # type: ignore[misc]
    await client.aclose()


def limited(app: ASGIApp, redis: aioredis.Redis, namespace: str, per_minute: int) -> ASGIApp:
    def principal_of(scope: Scope) -> str | None:
        return dict(scope["headers"]).get(b"x-token-name", b"").decode() or None

    return RunRateLimit(app, per_minute, namespace, principal_of, lambda _scope: redis)


async def test_a_token_over_its_run_budget_gets_429_and_others_are_not_affected(
    redis: aioredis.Redis,
) -> None:
    namespace = f"limits-{uuid.uuid4().hex[:8]}"
    # two gateway replicas over one Redis: the budget is the token's, not a replica's
    one = limited(Held().app(), redis, namespace, per_minute=3)
    two = limited(Held().app(), redis, namespace, per_minute=3)
    alice = {"x-token-name": "alice"}
    async with client_of(one) as first, client_of(two) as second:
        codes = [
            (await client.post("/run-agents", json={"id": 1}, headers=alice)).status_code
            for client in (first, second, first)
        ]
        assert codes == [202, 202, 202]
        refused = await second.post("/run-agents", json={"id": 1}, headers=alice)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "alice" in refused.json()["error"]["message"]
        bob = await first.post("/run-agents", json={"id": 1}, headers={"x-token-name": "bob"})
        assert bob.status_code == 202
        # without a token name (auth off) nothing is counted
        for _ in range(5):
            assert (await first.post("/run-agents", json={"id": 1})).status_code == 202
    assert await redis.keys(f"{namespace}:ratelimit:run:*") != []
