"""Runners in the test's event loop, driven command by command: mockai and the ingestor serve
on free ports (the run's model and retrieval), and the test admits a run as the gateway does,
then hands its command to `handle_run` with the runner (and Redis client) it chooses."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from openai import AsyncOpenAI
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.commandside.claims import claim_task
from libs.commandside.locks import Lease, TaskLocks
from libs.common import Settings
from libs.common.database import create_engine, create_schema
from libs.events import EventStore, Keys, LockAcquired, RunAgent, RunRequested, connect_redis
from libs.events.codec import AnyEvent
from libs.events.stats import RunStats
from services.ingestor.app import create_app as ingestor_app
from services.mockai import create_app as mockai_app
from services.runner.lifecycle import RunDeps
from tests.eventually import eventually
from tests.integration.inprocess import serving, stack_settings

__all__ = ["RunnerKit", "runner_kit"]


@dataclass
class RunnerKit:
    settings: Settings
    keys: Keys
    redis: aioredis.Redis
    store: EventStore
    engine: AsyncEngine
    http: httpx.AsyncClient
    llm: AsyncOpenAI

    def deps(self, worker: str, *, locks_redis: aioredis.Redis | None = None) -> RunDeps:
        """A runner named `worker`; with `locks_redis`, its lease goes through that client."""
        return RunDeps(
            settings=self.settings,
            store=self.store,
            locks=TaskLocks(locks_redis or self.redis, self.keys),
            engine=self.engine,
            llm=self.llm,
            http=self.http,
            stats=RunStats(self.redis, self.keys),
            worker=worker,
        )

    async def admit(self, task_id: int, *, hold_seconds: float = 0.0) -> RunAgent:
        """What the gateway does for POST /run-agents: reserve the lock, claim the task, record
        `lock.acquired` and `run.requested` under the lock; the command it queues."""
        run_id = uuid.uuid4().hex
        lease = await TaskLocks(self.redis, self.keys).acquire(
            task_id, run_id, self.settings.lock_ttl_ms
        )
        assert isinstance(lease, Lease), lease
        expires_at = time.time() + self.settings.queue_timeout_s
        assert await claim_task(self.engine, task_id, run_id, lease.fence, expires_at)
        ids = {"task_id": task_id, "run_id": run_id, "fence": lease.fence}
        acquired = LockAcquired(**ids, ttl_ms=self.settings.lock_ttl_ms, by="gateway")  # type: ignore[arg-type]
        await self.store.append(acquired, lock_token=lease.token)
        question = "Why is the sky blue?"
        await self.store.append(RunRequested(**ids, query=question), lock_token=lease.token)  # type: ignore[arg-type]
        return RunAgent(**ids, question=question, hold_seconds=hold_seconds)  # type: ignore[arg-type]

    async def events(self, task_id: int) -> list[AnyEvent]:
        return [stored.event for stored in await self.store.task_events(task_id)]

    async def types(self, task_id: int) -> list[str]:
        """The types of the task's events, oldest first."""
        return [str(type(e).__struct_config__.tag) for e in await self.events(task_id)]

    async def wait_for(self, task_id: int, event_type: str) -> None:
        await eventually(
            lambda: self.types(task_id),
            until=lambda types: event_type in types,
            message=f"no {event_type} on task {task_id}'s stream",
        )


@asynccontextmanager
async def runner_kit(
    redis_url: str, database_url: str, keys: Keys, data_dir: Path, **overrides: object
) -> AsyncIterator[RunnerKit]:
    # dev: honours a command's hold_seconds
    settings = stack_settings(
        redis_url, database_url, keys, data_dir, **({"dev": True} | overrides)
    )
    mockai_port, ingestor_port = settings.mockai_port, settings.ingestor_port
    redis = connect_redis(redis_url)
    engine = create_engine(settings.sqlalchemy_url)
    await create_schema(engine)
    llm = AsyncOpenAI(base_url=settings.openai_base_url, api_key="test", max_retries=0)
    try:
        async with (
            serving(mockai_app(), mockai_port),
            serving(ingestor_app(settings), ingestor_port),
            httpx.AsyncClient(timeout=30) as http,
        ):
            yield RunnerKit(settings, keys, redis, EventStore(redis, keys), engine, http, llm)
    finally:
        await llm.close()
        await redis.aclose()
        await engine.dispose()
