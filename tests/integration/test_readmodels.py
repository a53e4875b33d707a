"""The projector's writer on SQLite and PostgreSQL: rows, idempotence, concurrent writers."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.events import RunCompleted, RunRequested, RunStarted, StoredEvent, TaskCreated
from libs.readmodels import (
    LostRace,
    apply_batch,
    get_task,
    list_activity,
    list_runs,
    load_positions,
)


def stored(n: int, event: object) -> StoredEvent:
    return StoredEvent(entry_id=f"1000-{n}", stream_id=f"2000-{n}", event=event)  # type: ignore[arg-type]


WORKLOAD = [
    stored(0, TaskCreated(task_id=5, title="Sky", at=1.0)),
    stored(1, RunRequested(task_id=5, run_id="r1", query="why blue", at=2.0)),
    stored(2, RunStarted(task_id=5, run_id="r1", at=3.0)),
    stored(3, RunCompleted(task_id=5, run_id="r1", answer="Blue.", at=4.0)),
]


async def test_a_batch_becomes_task_run_and_activity_rows(engine: AsyncEngine) -> None:
    position = await apply_batch(engine, 1, WORKLOAD)
    assert position == "1000-3"
    task = await get_task(engine, 5)
    assert task is not None
    assert (task.status, task.last_answer, task.runs) == ("done", "Blue.", 1)
    [run] = await list_runs(engine, 5)
    assert (run.status, run.query, run.answer, run.started_at) == ("done", "why blue", "Blue.", 3.0)
    activity = await list_activity(engine, 5)
    assert [a.type for a in activity] == [
        "task.created",
        "run.requested",
        "run.started",
        "run.completed",
    ]
    assert [a.entry_id for a in activity] == ["2000-0", "2000-1", "2000-2", "2000-3"]


async def test_a_redelivered_batch_changes_nothing(engine: AsyncEngine) -> None:
    await apply_batch(engine, 1, WORKLOAD[:2])
    await apply_batch(engine, 1, WORKLOAD)  # first two again, with two new ones
    await apply_batch(engine, 1, WORKLOAD)  # all again
    task = await get_task(engine, 5)
    assert task is not None
    assert (task.status, task.runs) == ("done", 1)
    assert len(await list_activity(engine, 5)) == 4
    assert await load_positions(engine) == {1: "1000-3"}


async def test_two_projectors_applying_the_same_batch_at_once_write_it_once(
    engine: AsyncEngine,
) -> None:
    await apply_batch(engine, 1, WORKLOAD[:1])
    results = await asyncio.gather(
        *(apply_batch(engine, 1, WORKLOAD) for _ in range(3)), return_exceptions=True
    )
    for result in results:
        assert result == "1000-3" or isinstance(result, LostRace), result
    task = await get_task(engine, 5)
    assert task is not None
    assert (task.status, task.runs) == ("done", 1)
    assert len(await list_activity(engine, 5)) == 4
    assert await load_positions(engine) == {1: "1000-3"}
