"""The pure projection functions fold events into task and run views without any I/O."""

from __future__ import annotations

from functools import reduce

from libs.events import (
    AnyEvent,
    LlmDelta,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunStarted,
    TaskCreated,
)
from libs.readmodels import RunView, TaskView, project_run, project_task, summarize


def fold_task(events: list[AnyEvent]) -> TaskView | None:
    return reduce(project_task, events, None)


def fold_run(events: list[AnyEvent]) -> RunView | None:
    return reduce(project_run, events, None)


CREATED = TaskCreated(task_id=1, title="Sky", description="why blue", at=10.0)


def test_a_new_task_has_status_new() -> None:
    task = fold_task([CREATED])
    assert task is not None
    assert (task.id, task.title, task.status, task.runs) == (1, "Sky", "new", 0)


def test_a_run_moves_the_task_queued_running_done() -> None:
    requested = RunRequested(task_id=1, run_id="r1", at=11.0)
    started = RunStarted(task_id=1, run_id="r1", at=12.0)
    completed = RunCompleted(task_id=1, run_id="r1", answer="blue", at=13.0)
    statuses = []
    task: TaskView | None = fold_task([CREATED])
    for event in (requested, started, completed):
        task = project_task(task, event)
        assert task is not None
        statuses.append(task.status)
    assert statuses == ["queued", "running", "done"]
    assert task is not None
    assert (task.last_answer, task.runs, task.updated_at) == ("blue", 1, 13.0)


def test_a_late_event_of_an_older_run_does_not_move_the_task() -> None:
    task = fold_task(
        [
            CREATED,
            RunRequested(task_id=1, run_id="old"),
            RunRequested(task_id=1, run_id="new"),
            RunFailed(task_id=1, run_id="old", reason="zombie"),
        ]
    )
    assert task is not None
    assert (task.status, task.last_run_id, task.last_error) == ("queued", "new", "")


def test_events_before_the_task_exists_change_nothing() -> None:
    assert fold_task([RunStarted(task_id=9, run_id="r")]) is None


def test_a_failed_run_records_its_reason() -> None:
    run = fold_run(
        [
            RunRequested(task_id=1, run_id="r1", query="q", fence=4, at=1.0),
            RunStarted(task_id=1, run_id="r1", at=2.0),
            RunFailed(task_id=1, run_id="r1", reason="LLM down", at=3.0),
        ]
    )
    assert run == RunView(
        run_id="r1",
        task_id=1,
        status="failed",
        requested_at=1.0,
        fence=4,
        query="q",
        error="LLM down",
        started_at=2.0,
        finished_at=3.0,
    )


def test_token_deltas_are_not_listed_in_the_activity_timeline() -> None:
    assert summarize(LlmDelta(task_id=1, run_id="r", index=0, text="x")) is None
    assert summarize(CREATED) == "Task created: Sky"
