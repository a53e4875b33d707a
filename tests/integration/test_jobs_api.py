"""`GET /api/jobs` against a real gateway, Redis/Valkey and SQL database: live workers with their
entry in hand, pending entries on a dead consumer, dead letters, failed runs, and why queued runs
wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Route

from libs.claims import claim_task
from libs.common import Settings
from libs.events import INGESTORS_GROUP, RUNNERS_GROUP, Keys, connect_redis
from libs.events.codec import encode
from libs.events.commands import RunAgent
from libs.events.consumer import ConsumerOptions, GroupConsumer
from libs.events.locks import TaskLocks
from libs.events.workers import WorkerInfo, WorkerRegistry
from libs.readmodels import create_engine
from libs.readmodels.schema import runs
from services.gateway.app import create_app
from services.gateway.jobs_api import jobs
from tests.conftest import free_port
from tests.integration.inprocess import serving

BEAT_S = 0.1


@asynccontextmanager
async def gateway(
    redis_url: str, database_url: str, keys: Keys, data_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=data_dir,
        redis_url=redis_url,
        database_url=database_url,
        namespace=keys.namespace,
        partitions=keys.partitions,
        gateway_port=free_port(),
    )
    app = create_app(settings)
    if not any(getattr(r, "path", "") == "/api/jobs" for r in app.router.routes):
        app.router.routes.append(Route("/api/jobs", jobs, methods=["GET"]))
    async with (
        serving(app, settings.gateway_port),
        httpx.AsyncClient(base_url=settings.gateway_url, timeout=10) as client,
    ):
        yield client


async def get_jobs(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/jobs")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def eventually(
    client: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool], within_s: float = 5.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        body = await get_jobs(client)
        if check(body) or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


def reason_of(body: dict[str, Any], run_id: str) -> str:
    reasons = [w["reason"] for w in body["waiting"] if w["run_id"] == run_id]
    assert reasons, body["waiting"]
    reason: str = reasons[0]
    return reason


async def queue_run(
    redis: aioredis.Redis, engine: AsyncEngine, keys: Keys, task_id: int, run_id: str
) -> str:
    """What admission leaves behind for a queued run: a queued claim and a command entry."""
    assert await claim_task(engine, task_id, run_id, fence=1, expires_at=time.time() + 600)
    command = RunAgent(task_id=task_id, run_id=run_id, fence=1, question="q")
    return str(await redis.xadd(keys.run_commands, {"data": encode(command)}))


async def test_jobs_view(redis_url: str, database_url: str, keys: Keys, tmp_path: Path) -> None:
    redis = connect_redis(redis_url)
    engine = create_engine(Settings(data_dir=tmp_path, database_url=database_url).sqlalchemy_url)
    stop = asyncio.Event()
    release = asyncio.Event()
    consumer_task: asyncio.Task[None] | None = None
    try:
        async with gateway(redis_url, database_url, keys, tmp_path) as client:
            # empty: no streams yet -> zeros and notes, not an error
            body = await get_jobs(client)
            runner = body["services"]["runner"]
            assert runner["stream"] == keys.run_commands
            assert runner["group"] == RUNNERS_GROUP
            assert runner["workers"] == []
            assert runner["pending"] == []
            assert runner["lag"] == 0
            assert any("does not exist" in n for n in runner["notes"])
            assert body["services"]["ingestor"]["group"] == INGESTORS_GROUP

            slow_started = asyncio.Event()

            async def slow(_entry_id: str, _fields: dict[str, str]) -> None:
                slow_started.set()
                await release.wait()

            registry = WorkerRegistry(redis, keys.namespace, interval_s=BEAT_S)
            runner_consumer = GroupConsumer(
                redis=redis,
                keys=keys,
                stream=keys.run_commands,
                group=RUNNERS_GROUP,
                handler=slow,
                options=ConsumerOptions(block_ms=100, min_idle_ms=600_000),
                name="live-runner",
                registry=registry,
                service="runner",
            )
            await runner_consumer.ensure_group()

            # 1. a queued run and no live runner
            await queue_run(redis, engine, keys, 1, "run-nolive")
            body = await get_jobs(client)
            assert reason_of(body, "run-nolive") == "no live consumer in group runners"
            assert body["services"]["runner"]["lag"] == 1

            # 2. a consumer reads it and never acks: pending on a dead consumer
            await redis.xreadgroup(RUNNERS_GROUP, "dead-runner", {keys.run_commands: ">"}, count=1)
            await asyncio.sleep(0.05)
            body = await get_jobs(client)
            [pending] = body["services"]["runner"]["pending"]
            assert pending["consumer"] == "dead-runner"
            assert pending["deliveries"] == 1
            assert pending["idle_ms"] >= 0
            assert pending["consumer_live"] is False
            assert reason_of(body, "run-nolive") == "pending on dead consumer dead-runner"

            # 3. a live runner with a slow handler: it heartbeats its entry in hand
            consumer_task = asyncio.create_task(runner_consumer.run(stop))
            busy_entry = await queue_run(redis, engine, keys, 2, "run-busy")
            await asyncio.wait_for(slow_started.wait(), 5)
            body = await eventually(
                client,
                lambda b: any(
                    w["current_entry"] == busy_entry for w in b["services"]["runner"]["workers"]
                ),
            )
            [worker] = body["services"]["runner"]["workers"]
            assert worker["id"] == "live-runner"
            assert worker["service"] == "runner"
            assert worker["current_entry"] == busy_entry
            assert worker["pid"] > 0
            assert worker["host"]
            assert worker["started_at"] <= worker["seen_at"]
            live_pending = [
                p for p in body["services"]["runner"]["pending"] if p["id"] == busy_entry
            ]
            assert live_pending
            assert live_pending[0]["consumer_live"] is True
            assert reason_of(body, "run-nolive") == "pending on dead consumer dead-runner"

            # 4. held by another run's lock; and queued behind the busy runner
            locks = TaskLocks(redis, keys)
            await locks.acquire(3, "other-run", ttl_ms=60_000)
            await queue_run(redis, engine, keys, 3, "run-locked")
            await queue_run(redis, engine, keys, 4, "run-behind")
            body = await get_jobs(client)
            assert reason_of(body, "run-locked").startswith("held by lock other-run until ")
            assert reason_of(body, "run-behind") == "queued behind 2 commands"

            # 5. dead letters, one made by the consumer loop itself (ingestor stream)
            async def boom(_entry_id: str, _fields: dict[str, str]) -> None:
                raise RuntimeError("boom")

            failing = GroupConsumer(
                redis=redis,
                keys=keys,
                stream=keys.ingest_commands,
                group=INGESTORS_GROUP,
                handler=boom,
                options=ConsumerOptions(block_ms=100, min_idle_ms=0, max_deliveries=1),
                name="failing-ingestor",
            )
            await failing.ensure_group()
            source = await redis.xadd(keys.ingest_commands, {"data": '{"type":"ingest"}'})
            await failing.process_once(block=False)
            await failing.process_once(block=False)
            dead_run = RunAgent(task_id=9, run_id="run-dead", fence=1, question="q")
            await redis.xadd(
                keys.dead_letters(keys.run_commands),
                {
                    "data": encode(dead_run),
                    "source_id": "1-0",
                    "group": RUNNERS_GROUP,
                    "deliveries": "5",
                    "reason": "TimeoutError: llm",
                },
            )

            # 6. failed runs from the read model, newest first, completed ones left out
            now = time.time()
            async with engine.begin() as conn:
                for run_id, status, finished in [
                    ("r-old", "failed", now - 100),
                    ("r-new", "superseded", now - 10),
                    ("r-ok", "completed", now - 5),
                ]:
                    await conn.execute(
                        runs.insert().values(
                            run_id=run_id,
                            task_id=7,
                            status=status,
                            fence=1,
                            error=f"{status} error",
                            requested_at=finished - 1,
                            finished_at=finished,
                        )
                    )

            body = await get_jobs(client)
            [ingest_dead] = body["services"]["ingestor"]["dead_letters"]
            assert ingest_dead["reason"] == "RuntimeError: boom"
            assert ingest_dead["source_id"] == source
            assert ingest_dead["deliveries"] == 1
            assert body["services"]["ingestor"]["pending"] == []
            [run_dead] = body["services"]["runner"]["dead_letters"]
            assert run_dead["reason"] == "TimeoutError: llm"
            assert (run_dead["task_id"], run_dead["run_id"]) == (9, "run-dead")
            assert run_dead["deliveries"] == 5
            assert [r["run_id"] for r in body["failed_runs"]] == ["r-new", "r-old"]
            assert body["failed_runs"][0]["error"] == "superseded error"

            # 7. clean shutdown removes the worker: no live consumer again
            release.set()
            stop.set()
            await asyncio.wait_for(consumer_task, 10)
            consumer_task = None
            body = await get_jobs(client)
            assert body["services"]["runner"]["workers"] == []
            assert "no live consumer in group runners" in body["services"]["runner"]["notes"]
            assert reason_of(body, "run-locked").startswith("held by lock other-run")
            # run-behind's command was never delivered: nobody is there to take it
            assert reason_of(body, "run-behind") == "no live consumer in group runners"
    finally:
        release.set()
        stop.set()
        if consumer_task is not None:
            await consumer_task
        async for key in redis.scan_iter(match=f"{keys.namespace}:*"):
            await redis.delete(key)
        await redis.aclose()
        await engine.dispose()


async def test_registry_staleness_and_pruning(redis_url: str, keys: Keys) -> None:
    redis = connect_redis(redis_url)
    try:
        registry = WorkerRegistry(redis, keys.namespace, interval_s=BEAT_S)
        info = WorkerInfo(id="w1", service="runner", host="h", pid=1, started_at=time.time())
        written = await registry.heartbeat(info)
        assert written.interval_s == BEAT_S
        assert [w.id for w in await registry.live_workers("runner")] == ["w1"]
        later = time.time() + 4 * BEAT_S
        assert await registry.live_workers("runner", now=later) == []
        assert [w.id for w in await registry.workers("runner")] == ["w1"]
        await asyncio.sleep(11 * BEAT_S)
        other = WorkerInfo(id="w2", service="runner", host="h", pid=2, started_at=time.time())
        await registry.heartbeat(other)  # prunes w1, dead for more than 10 beats
        assert [w.id for w in await registry.workers("runner")] == ["w2"]
        await registry.remove(other)
        assert await registry.workers("runner") == []
    finally:
        await redis.delete(f"{keys.namespace}:workers:runner")
        await redis.aclose()


async def test_consumer_without_registry_writes_nothing(redis_url: str, keys: Keys) -> None:
    redis = connect_redis(redis_url)
    seen: list[str] = []

    async def handle(entry_id: str, _fields: dict[str, str]) -> None:
        seen.append(entry_id)

    try:
        consumer = GroupConsumer(
            redis=redis, keys=keys, stream=keys.run_commands, group=RUNNERS_GROUP, handler=handle
        )
        await consumer.ensure_group()
        entry = await redis.xadd(keys.run_commands, {"data": "{}"})
        await consumer.run(burst=True)
        assert seen == [entry]
        assert [k async for k in redis.scan_iter(match=f"{keys.namespace}:workers:*")] == []
    finally:
        async for key in redis.scan_iter(match=f"{keys.namespace}:*"):
            await redis.delete(key)
        await redis.aclose()
