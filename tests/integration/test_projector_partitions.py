"""Several projectors share the partition logs (RAGPOC_PROJECTOR_PARTITIONS): each follows and
trims only its own range, and together they project every task."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common import Settings, SettingsError
from libs.events import EventStore, Keys, TaskCreated
from libs.events.retention import Trimmer
from libs.readmodels.archive import SqlArchive
from libs.readmodels.queries import get_task
from services.projector.main import Projector, partitions_to_follow


def test_the_setting_names_ranges_and_single_partitions_within_the_partition_count() -> None:
    def follow(value: str) -> list[int]:
        env = {"RAGPOC_PARTITIONS": "16", "RAGPOC_PROJECTOR_PARTITIONS": value}
        return partitions_to_follow(Settings.from_env(env))

    assert follow("") == list(range(16))
    assert follow("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    with pytest.raises(SettingsError, match=r"within 0\.\.15"):
        follow("12-16")
    with pytest.raises(SettingsError, match="RAGPOC_PROJECTOR_PARTITIONS"):
        Settings.from_env({"RAGPOC_PROJECTOR_PARTITIONS": "0-"})


async def test_two_projectors_with_disjoint_ranges_project_every_task_each_its_own_logs(
    redis_client: aioredis.Redis, keys: Keys, engine: AsyncEngine
) -> None:
    assert keys.partitions == 4
    store = EventStore(redis_client, keys)
    for task_id in range(1, 9):  # two tasks in each partition
        await store.append(TaskCreated(task_id=task_id, title=f"task {task_id}"))
    low = Projector(redis_client, engine, keys, [0, 1])
    high = Projector(redis_client, engine, keys, [2, 3])
    for projector in (low, high):
        await projector.start()

    assert await low.catch_up() == 4  # its two partitions' logs, and no other
    assert await high.catch_up() == 4

    for task_id in range(1, 9):
        task = await get_task(engine, task_id)
        assert task is not None
        assert task.title == f"task {task_id}"
    archive = SqlArchive(engine)
    low_trim = await Trimmer(redis_client, keys, archive, 0, partitions=[0, 1]).run_once(
        dry_run=True
    )
    trimmed_logs = {t.stream for t in low_trim.streams if t.kind == "partition"}
    assert trimmed_logs == {keys.partition_log(0), keys.partition_log(1)}
    assert any(t.kind == "commands" for t in low_trim.streams)  # partition 0's owner does those
    high_trim = await Trimmer(redis_client, keys, archive, 0, partitions=[2, 3]).run_once(
        dry_run=True
    )
    assert {t.kind for t in high_trim.streams} <= {"partition", "task"}
