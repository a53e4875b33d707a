"""The runner process: a member of the "runners" group on the run-command stream."""

from __future__ import annotations

import asyncio

import structlog
from openai import AsyncOpenAI

from libs.common import Settings
from libs.events import (
    RUNNERS_GROUP,
    ConsumerOptions,
    EventStore,
    GroupConsumer,
    Keys,
    RunFailed,
    connect_redis,
    decode_command,
)
from services.runner.agent import execute_run
from services.shutdown import stop_on_signals

__all__ = ["build_consumer", "serve"]

log = structlog.get_logger(__name__)


def build_consumer(settings: Settings, store: EventStore, llm: AsyncOpenAI) -> GroupConsumer:
    keys = store.keys

    async def handle(entry_id: str, fields: dict[str, str]) -> None:
        command = decode_command(fields["data"])
        with structlog.contextvars.bound_contextvars(
            task_id=command.task_id, run_id=command.run_id
        ):
            await execute_run(
                command, store=store, llm=llm, settings=settings, worker=consumer.name
            )

    async def dead_lettered(entry_id: str, fields: dict[str, str], reason: str) -> None:
        command = decode_command(fields["data"])
        await store.append(
            RunFailed(
                task_id=command.task_id,
                run_id=command.run_id,
                fence=command.fence,
                reason=f"gave up after repeated failures: {reason}",
            )
        )

    consumer = GroupConsumer(
        redis=store.redis,
        keys=keys,
        stream=keys.run_commands,
        group=RUNNERS_GROUP,
        handler=handle,
        options=ConsumerOptions(
            block_ms=settings.consumer_block_ms,
            min_idle_ms=settings.consumer_min_idle_ms,
            max_deliveries=settings.consumer_max_deliveries,
        ),
        on_dead_letter=dead_lettered,
    )
    return consumer


async def serve(settings: Settings) -> None:
    redis = connect_redis(settings.redis_url)
    store = EventStore(redis, Keys(settings.namespace, settings.partitions))
    llm = AsyncOpenAI(base_url=settings.openai_base_url, api_key=settings.openai_api_key)
    consumer = build_consumer(settings, store, llm)
    stop = stop_on_signals()
    try:
        await consumer.run(stop)
    finally:
        await llm.close()
        await redis.aclose()


def main(settings: Settings) -> None:
    asyncio.run(serve(settings))
