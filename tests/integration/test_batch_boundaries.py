"""The batched writer: however a partition's log is cut into batches (by the projector's reads,
by a rebuild's pages), the read models come out the same, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.events import (
    AnyEvent,
    LlmDelta,
    LockAcquired,
    LockReleased,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunStarted,
    RunSuperseded,
    StoredEvent,
    TaskCreated,
)
from libs.readmodels import apply_batch
from libs.readmodels import rebuild as rebuild_module
from libs.readmodels.rebuild import drop_read_models, rebuild_from_archive
from tests.readmodel_snapshot import snapshot


def interleaved_log() -> list[StoredEvent]:
    """Three tasks whose events interleave: runs that fail, are superseded and are retried, and
    late events of an older run, so one batch updates rows an earlier batch inserted."""
    events: list[AnyEvent] = []
    for task_id in (1, 2, 3):
        events.append(TaskCreated(task_id=task_id, title=f"task {task_id}", at=1.0))
    for attempt in (1, 2):
        for task_id in (1, 2, 3):
            run = f"r{task_id}-{attempt}"
            events += [
                LockAcquired(task_id=task_id, run_id=run, fence=attempt, ttl_ms=1000, at=2.0),
                RunRequested(task_id=task_id, run_id=run, query="q", fence=attempt, at=2.0),
                RunStarted(task_id=task_id, run_id=run, fence=attempt, at=3.0),
                LlmDelta(task_id=task_id, run_id=run, index=0, text="w", at=3.5),
            ]
        for task_id in (1, 2, 3):
            run = f"r{task_id}-{attempt}"
            if attempt == 1 and task_id == 2:
                events.append(RunSuperseded(task_id=task_id, run_id=run, reason="newer", at=4.0))
            elif attempt == 1:
                events.append(RunFailed(task_id=task_id, run_id=run, reason="boom", at=4.0))
            else:
                events.append(RunCompleted(task_id=task_id, run_id=run, answer="ok", at=4.0))
            events.append(LockReleased(task_id=task_id, run_id=run, at=4.5))
    events.append(RunStarted(task_id=1, run_id="r1-1", at=9.0))  # late: the task stays put
    return [
        StoredEvent(entry_id=f"5000-{n}", stream_id=f"6000-{n}", event=event)
        for n, event in enumerate(events)
    ]


async def project(engine: AsyncEngine, log: list[StoredEvent], size: int) -> dict[str, object]:
    await drop_read_models(engine)
    for start in range(0, len(log), size):
        await apply_batch(engine, 3, log[start : start + size], archive=False)
    return await snapshot(engine)


async def test_how_the_log_is_cut_into_batches_changes_no_row(engine: AsyncEngine) -> None:
    log = interleaved_log()
    whole = await project(engine, log, len(log))
    assert [t["status"] for t in whole["tasks"]] == ["done", "done", "done"]  # type: ignore[index]
    assert len(whole["runs"]) == 6  # type: ignore[arg-type]
    for size in (1, 2, 7):
        assert await project(engine, log, size) == whole, f"batches of {size}"


async def test_a_rebuild_in_small_pages_gives_the_live_rows(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = interleaved_log()
    for start in range(0, len(log), 10):
        await apply_batch(engine, 3, log[start : start + 10])
    live = await snapshot(engine)
    monkeypatch.setattr(rebuild_module, "PAGE", 4)  # pages that split every task's runs
    report = await rebuild_from_archive(engine)
    assert report.events == len(log)
    assert await snapshot(engine) == live
