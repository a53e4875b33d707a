"""Upgrading a data folder of a version that queued every run command in one stream
(`ragpoc:cmd:run`): the runners still drain it while it exists, beside the partition streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.events import Keys
from libs.events.codec import encode
from services.runner.main import build_consumer, run_command_streams
from tests.eventually import eventually
from tests.integration.runnerkit import RunnerKit, runner_kit


@pytest.fixture
async def kit(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> AsyncIterator[RunnerKit]:
    async with runner_kit(redis_url, database_url, keys, tmp_path) as kit:
        yield kit


async def test_a_runner_reads_the_partition_streams_and_no_other_when_there_is_no_old_stream(
    kit: RunnerKit, keys: Keys
) -> None:
    assert await run_command_streams(kit.redis, keys) == keys.run_command_streams()
    assert len(set(keys.run_command_streams())) == keys.partitions


async def test_a_run_queued_in_the_old_single_stream_before_the_upgrade_still_runs(
    kit: RunnerKit, keys: Keys
) -> None:
    old = await kit.admit(5)
    await kit.redis.xadd(keys.legacy_run_commands, {"type": "run", "data": encode(old)})
    new = await kit.admit(6)
    await kit.redis.xadd(keys.run_commands_of(6), {"type": "run", "data": encode(new)})

    streams = await run_command_streams(kit.redis, keys)
    assert streams == [*keys.run_command_streams(), keys.legacy_run_commands]
    stop = asyncio.Event()
    consumer = build_consumer(kit.deps("runner"), streams)
    consuming = asyncio.create_task(consumer.run(stop))
    try:
        await kit.wait_for(5, "run.completed")
        await kit.wait_for(6, "run.completed")
        await eventually(  # acked just after its run ended
            lambda: kit.redis.xinfo_groups(keys.legacy_run_commands),
            until=lambda groups: (
                [(g["name"], g["pending"], g["lag"]) for g in groups] == [("runners", 0, 0)]
            ),
        )

        # drained: the operator deletes it, and the runner stops reading it without making
        # it again (nor failing), while the partition streams go on
        await kit.redis.delete(keys.legacy_run_commands)
        later = await kit.admit(7)
        await kit.redis.xadd(keys.run_commands_of(7), {"type": "run", "data": encode(later)})
        await kit.wait_for(7, "run.completed")
        await eventually(lambda: consumer.streams, until=lambda s: s == keys.run_command_streams())
        assert await kit.redis.exists(keys.legacy_run_commands) == 0
    finally:
        stop.set()
        await consuming
