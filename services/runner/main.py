"""The runner process: a member of the "runners" group on every partition's run-command
stream (and on the single run-command stream of earlier versions, while it exists)."""

from __future__ import annotations

import asyncio

import httpx
import redis.asyncio as aioredis
import structlog
from openai import AsyncOpenAI
from redis.exceptions import RedisError

from libs.commandside.locks import TaskLocks
from libs.common import Settings
from libs.common.database import create_engine, create_schema
from libs.common.shutdown import stop_on_signals
from libs.events import (
    RUNNERS_GROUP,
    ConsumerOptions,
    EventDecodeError,
    EventStore,
    GroupConsumer,
    Keys,
    RunAgent,
    RunFailed,
    connect_redis,
    consumer_name,
    decode_command,
)
from libs.events.stats import RunStats
from libs.events.workers import WorkerRegistry
from services.runner.lifecycle import RunDeps, handle_run
from services.runner.metrics import RUNS_FINISHED, RUNS_IN_PROGRESS, serve_metrics
from services.runner.reaper import reap_until
from services.runner.reports import write_report

__all__ = ["build_consumer", "serve"]

log = structlog.get_logger(__name__)


async def run_command_streams(redis: aioredis.Redis, keys: Keys) -> list[str]:
    """The streams a runner consumes: every partition's, and the one run-command stream of
    versions before partitioning if it still exists, so the commands queued there before an
    upgrade still run (delete it once its group has nothing pending: docs/SCALING.md)."""
    streams = keys.run_command_streams()
    try:
        legacy = await redis.exists(keys.legacy_run_commands)
    except RedisError as exc:  # Redis not up yet: the consumer rides that out, this need not
        log.warning("runner.legacy_stream_unknown", error=f"{type(exc).__name__}: {exc}")
        return streams
    if legacy:
        log.info("runner.legacy_stream", stream=keys.legacy_run_commands)
        streams.append(keys.legacy_run_commands)
    return streams


def build_consumer(deps: RunDeps, streams: list[str] | None = None) -> GroupConsumer:
    async def handle(entry_id: str, fields: dict[str, str]) -> None:
        command = decode_command(fields["data"], RunAgent)
        with (
            structlog.contextvars.bound_contextvars(task_id=command.task_id, run_id=command.run_id),
            RUNS_IN_PROGRESS.track_inprogress(),
        ):
            await handle_run(command, deps)

    async def dead_lettered(entry_id: str, fields: dict[str, str], reason: str) -> None:
        """Fail the run the command was for, fenced (`reports`): at the newest fence the run
        took (the command's when none is recorded), only if no live holder of the run has the
        lock, so a run still going elsewhere is never failed under it."""
        try:
            command = decode_command(fields.get("data", ""), RunAgent)
        except EventDecodeError:
            return  # not a command at all: there is no run to fail, the dead letter says it all

        def failed(fence: int) -> list[RunFailed]:
            why = f"gave up after repeated failures: {reason}"
            return [
                RunFailed(task_id=command.task_id, run_id=command.run_id, fence=fence, reason=why)
            ]

        with structlog.contextvars.bound_contextvars(
            task_id=command.task_id, run_id=command.run_id
        ):
            written = await write_report(
                deps,
                command.task_id,
                command.run_id,
                fence=None,
                fallback_fence=command.fence,
                build=failed,
            )
        if written:
            await deps.stats.record("failed", 0.0, task_id=command.task_id)
            RUNS_FINISHED.labels(outcome="failed").inc()

    settings = deps.settings
    return GroupConsumer(
        redis=deps.store.redis,
        keys=deps.store.keys,
        stream=deps.store.keys.run_command_streams() if streams is None else streams,
        fading=frozenset([deps.store.keys.legacy_run_commands]),
        group=RUNNERS_GROUP,
        handler=handle,
        options=ConsumerOptions.from_settings(settings, concurrency=settings.runner_concurrency),
        name=deps.worker,
        on_dead_letter=dead_lettered,
        registry=WorkerRegistry(deps.store.redis, deps.store.keys.namespace),
        service="runner",
    )


async def serve(settings: Settings) -> None:
    redis = connect_redis(settings.redis_url, cluster=settings.cluster_mode)
    keys = Keys(settings.namespace, settings.partitions)
    engine = create_engine(settings.sqlalchemy_url)
    await create_schema(engine)
    llm = AsyncOpenAI(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key,
        timeout=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
    )
    http = httpx.AsyncClient(timeout=30)
    deps = RunDeps(
        settings=settings,
        store=EventStore(redis, keys),
        locks=TaskLocks(redis, keys),
        engine=engine,
        llm=llm,
        http=http,
        stats=RunStats(redis, keys),
        worker=consumer_name(),
    )
    stop = stop_on_signals()
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(reap_until(deps, stop), name="reaper")
            streams = await run_command_streams(redis, keys)
            await build_consumer(deps, streams).run(stop)
    finally:
        await llm.close()
        await http.aclose()
        await redis.aclose()
        await engine.dispose()


def main(settings: Settings) -> None:
    serve_metrics(settings)
    asyncio.run(serve(settings))
