"""What the `GET /api/jobs` tests share: a gateway serving the view in the test's event loop,
the Redis and database it reports on (`JobsView`), and a runner that keeps its entry in hand
until released (`SlowRunner`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Route

from libs.commandside.claims import claim_task
from libs.events import RUNNERS_GROUP, Keys
from libs.events.codec import encode
from libs.events.commands import RunAgent
from libs.events.consumer import ConsumerOptions, GroupConsumer
from libs.events.workers import WorkerRegistry
from services.gateway.app import create_app
from services.gateway.jobs_api import jobs
from tests.eventually import eventually
from tests.integration.inprocess import serving, stack_settings

BEAT_S = 0.1  # the workers' heartbeat interval in these tests, in seconds


@asynccontextmanager
async def gateway(
    redis_url: str, database_url: str, keys: Keys, data_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = stack_settings(redis_url, database_url, keys, data_dir)
    app = create_app(settings)
    if not any(getattr(r, "path", "") == "/api/jobs" for r in app.router.routes):
        app.router.routes.append(Route("/api/jobs", jobs, methods=["GET"]))
    async with (
        serving(app, settings.gateway_port),
        httpx.AsyncClient(base_url=settings.gateway_url, timeout=10) as client,
    ):
        yield client


@dataclass
class JobsView:
    """A gateway serving `GET /api/jobs`, and the Redis and database it reports on."""

    client: httpx.AsyncClient
    redis: aioredis.Redis
    engine: AsyncEngine
    keys: Keys

    async def get(self) -> dict[str, Any]:
        response = await self.client.get("/api/jobs")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def once(self, check: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
        """The view once `check` accepts it (workers heartbeat in their own time)."""
        return await eventually(
            self.get, until=check, within=5, message="GET /api/jobs never showed it"
        )

    async def queue_run(self, task_id: int, run_id: str, entry_id: str = "*") -> str:
        """What admission leaves behind for a queued run: a queued claim and a command entry in
        the run-command stream of the task's partition."""
        assert await claim_task(self.engine, task_id, run_id, fence=1, expires_at=time.time() + 600)
        command = RunAgent(task_id=task_id, run_id=run_id, fence=1, question="q")
        stream = self.keys.run_commands_of(task_id)
        return str(await self.redis.xadd(stream, {"data": encode(command)}, id=entry_id))


@dataclass
class SlowRunner:
    """A runner consumer, registered as `live-runner`, following every partition's run-command
    stream as the runners do, whose handler keeps each entry in hand until released. Its group
    exists from the start; the runner runs once a test starts it."""

    view: JobsView
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.consumer = GroupConsumer(
            redis=self.view.redis,
            keys=self.view.keys,
            stream=self.view.keys.run_command_streams(),
            group=RUNNERS_GROUP,
            handler=self.hold,
            options=ConsumerOptions(block_ms=100, min_idle_ms=600_000),
            name="live-runner",
            registry=WorkerRegistry(self.view.redis, self.view.keys.namespace, interval_s=BEAT_S),
            service="runner",
        )

    async def hold(self, _entry_id: str, _fields: dict[str, str]) -> None:
        self.started.set()
        await self.release.wait()

    async def busy_with(self, task_id: int, run_id: str) -> tuple[str, dict[str, Any]]:
        """Start the runner and queue it a run; return the run's entry, and the view once the
        worker's heartbeat shows that entry in its hand."""
        self.task = asyncio.create_task(self.consumer.run(self.stop))
        entry = await self.view.queue_run(task_id, run_id)
        await asyncio.wait_for(self.started.wait(), 5)
        body = await self.view.once(
            lambda b: any(w["current_entry"] == entry for w in b["services"]["runner"]["workers"])
        )
        return entry, body

    async def shut_down(self) -> None:
        """A clean shutdown: the entry in hand is finished, then the runner stops."""
        self.release.set()
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
            self.task = None
