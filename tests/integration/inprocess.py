"""The whole stack in the test's event loop: real uvicorn servers on free ports, the projector
and a runner as tasks, against a real Redis/Valkey and SQL database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

from libs.commandside.locks import TaskLocks
from libs.common import Settings
from libs.common.database import create_engine, create_schema
from libs.events import EventStore, Keys, connect_redis
from libs.events.stats import RunStats
from services.gateway.admission import Admitted, Refused, admit_run
from services.gateway.app import create_app as gateway_app
from services.gateway.context import GatewayContext
from services.gateway.hub import EventHub
from services.gateway.projection_watch import ProjectionWatch
from services.ingestor.app import create_app as ingestor_app
from services.mockai import create_app as mockai_app
from services.projector.main import Projector
from services.runner.lifecycle import RunDeps
from services.runner.main import build_consumer
from tests.conftest import free_port
from tests.eventually import eventually


@dataclass
class InProcessStack:
    settings: Settings
    client: httpx.AsyncClient
    store: EventStore

    async def new_task(self, title: str = "Why is the sky blue?") -> int:
        """POST /api/tasks; the new task's id."""
        reply = await self.client.post("/api/tasks", json={"title": title})
        return int(reply.json()["id"])

    async def event_types(self, task_id: int) -> list[str]:
        """The types of the events on the task's stream, oldest first."""
        events = await self.store.task_events(task_id)
        return [str(type(e.event).__struct_config__.tag) for e in events]

    async def admit_directly(self, keys: Keys, task_id: int, run_id: str) -> Admitted | Refused:
        """The gateway's admission past its precheck (the lock, then the claim), called as an
        endpoint calls it, on a context of this stack's clients."""
        engine = create_engine(self.settings.sqlalchemy_url)
        ctx = GatewayContext(
            settings=self.settings,
            keys=keys,
            redis=self.store.redis,
            store=self.store,
            locks=TaskLocks(self.store.redis, keys),
            engine=engine,
            follower=self.store,
            hub=EventHub(self.store),
            projection=ProjectionWatch(self.store.redis, engine, keys),
        )
        try:
            return await admit_run(ctx, task_id, run_id)
        finally:
            await engine.dispose()

    async def wait_for_event(self, task_id: int, event_type: str) -> None:
        """Until the task's stream holds an `event_type` event (10 s at most). A run's
        `lock.released` comes just after `run.completed`, so a finished status does not yet
        mean a complete stream."""
        await eventually(
            lambda: self.event_types(task_id),
            until=lambda types: event_type in types,
            message=f"no {event_type} on task {task_id}'s stream",
        )

    async def wait_until_released(self, task_id: int) -> None:
        """Until the task's latest lock was released (10 s at most): `?wait` answers on a run's
        outcome, and the runner releases the lock just after it."""

        def released(types: list[str]) -> bool:
            held = [tag for tag in types if tag in ("lock.acquired", "lock.released")]
            return bool(held) and held[-1] == "lock.released"

        await eventually(
            lambda: self.event_types(task_id),
            until=released,
            message=f"task {task_id}'s lock was never released",
        )

    async def wait_for_activity(self, task_id: int, event_type: str) -> list[str]:
        """The task's Activity types once the projector has folded an `event_type` event (10 s
        at most). The projector archives an event in the transaction that folds it, so the
        archive then holds the task's stream up to that event."""

        async def types() -> list[str]:
            reply = await self.client.get(f"/api/tasks/{task_id}/activity")
            return [a["type"] for a in reply.json()["activity"]]

        return await eventually(
            types,
            until=lambda projected: event_type in projected,
            message=f"task {task_id}: {event_type!r} never projected",
        )


@asynccontextmanager
async def serving(app: Starlette, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())

    def started() -> bool:
        if task.done():  # it stopped before it started: raise its error, or say so
            task.result()
            raise AssertionError(f"uvicorn on port {port} exited before it started")
        return server.started

    await eventually(
        started, within=30, interval=0.01, message=f"uvicorn on port {port} did not start"
    )
    try:
        yield
    finally:
        server.should_exit = True
        await task


def stack_settings(
    redis_url: str, database_url: str, keys: Keys, data_dir: str | Path, **overrides: object
) -> Settings:
    """Settings for services a test runs in-process: this test's Redis, database, namespace and
    partitions, every HTTP port free, the runner's LLM on this stack's mockai; `overrides` win."""
    mockai_port = free_port()
    values: dict[str, object] = {
        "data_dir": Path(data_dir),
        "redis_url": redis_url,
        "database_url": database_url,
        "namespace": keys.namespace,
        "partitions": keys.partitions,
        "gateway_port": free_port(),
        "ingestor_port": free_port(),
        "mockai_port": mockai_port,
        "openai_base_url": f"http://127.0.0.1:{mockai_port}/v1",
        # consumers notice the stop within a tenth of a second (a test's stack stops fast)
        "consumer_block_ms": 100,
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


@asynccontextmanager
async def in_process_stack(
    redis_url: str,
    database_url: str,
    keys: Keys,
    data_dir: str,
    runner_llm_url: str | None = None,
    **overrides: object,
) -> AsyncIterator[InProcessStack]:
    """`runner_llm_url` points the runner's chat model elsewhere than mockai (which the
    ingestor still uses for embeddings)."""
    from openai import AsyncOpenAI

    settings = stack_settings(
        redis_url, database_url, keys, data_dir, **({"consumer_block_ms": 100} | overrides)
    )
    mockai_port = settings.mockai_port
    redis = connect_redis(redis_url)
    store = EventStore(redis, keys)
    engine = create_engine(settings.sqlalchemy_url)
    projector = Projector(redis, engine, keys)
    await create_schema(engine)
    llm = AsyncOpenAI(
        base_url=runner_llm_url or settings.openai_base_url, api_key="test", max_retries=0
    )
    stop = asyncio.Event()
    async with (
        serving(mockai_app(), mockai_port),
        serving(ingestor_app(settings), settings.ingestor_port),
        serving(gateway_app(settings), settings.gateway_port),
        httpx.AsyncClient(timeout=30) as http,
    ):
        runner = build_consumer(
            RunDeps(
                settings=settings,
                store=store,
                locks=TaskLocks(redis, keys),
                engine=engine,
                llm=llm,
                http=http,
                stats=RunStats(redis, keys),
                worker="in-process-runner",
            )
        )
        await projector.start()
        tasks = [
            asyncio.create_task(projector.run(stop, block_ms=100)),
            asyncio.create_task(runner.run(stop)),
        ]
        async with httpx.AsyncClient(base_url=settings.gateway_url, timeout=10) as client:
            try:
                yield InProcessStack(settings=settings, client=client, store=store)
            finally:
                stop.set()
                await asyncio.gather(*tasks)
                await llm.close()
                await redis.aclose()
                await engine.dispose()
