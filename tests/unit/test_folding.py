"""The pure batch fold: events in, row changes out, on top of the rows as they stand."""

from __future__ import annotations

from libs.events import LlmDelta, RunRequested, RunStarted, StoredEvent, TaskCreated
from libs.readmodels import RunView, TaskView
from libs.readmodels.folding import Fold, fold_batch


def stored(n: int, event: object) -> StoredEvent:
    return StoredEvent(entry_id=f"1-{n}", stream_id=f"2-{n}", event=event)  # type: ignore[arg-type]


TASK = TaskView(id=7, title="Sky", description="", status="new", created_at=1.0, updated_at=1.0)  # type: ignore[arg-type]


def test_a_new_task_and_run_are_inserted_with_their_activity() -> None:
    changes = fold_batch(
        {},
        {},
        [
            stored(0, TaskCreated(task_id=7, title="Sky", at=1.0)),
            stored(1, RunRequested(task_id=7, run_id="r", query="q", at=2.0)),
            stored(2, LlmDelta(task_id=7, run_id="r", index=0, text="w", at=3.0)),
        ],
    )
    assert [(t["id"], t["status"], t["runs"]) for t in changes.new_tasks] == [(7, "queued", 1)]
    assert [(r["run_id"], r["status"]) for r in changes.new_runs] == [("r", "queued")]
    assert changes.changed_tasks == changes.changed_runs == []
    assert [(a["entry_id"], a["type"]) for a in changes.activity] == [
        ("2-0", "task.created"),
        ("2-1", "run.requested"),
    ]


def test_stored_rows_the_events_move_are_updated_and_the_others_left_alone() -> None:
    run = RunView(run_id="r", task_id=7, status="queued", requested_at=2.0)  # type: ignore[arg-type]
    other = RunView(run_id="old", task_id=7, status="done", requested_at=0.5)  # type: ignore[arg-type]
    changes = fold_batch(
        {7: TASK},
        {"r": run, "old": other},
        [stored(3, RunStarted(task_id=7, run_id="r", at=3.0))],
    )
    assert changes.new_tasks == changes.new_runs == []
    assert changes.changed_tasks == []  # the run is not the task's last run: the task stays put
    assert [(r["run_id"], r["status"], r["started_at"]) for r in changes.changed_runs] == [
        ("r", "running", 3.0)
    ]


def test_events_of_a_task_without_a_row_write_nothing_but_their_activity() -> None:
    changes = fold_batch({}, {}, [stored(0, RunStarted(task_id=9, run_id="x", at=1.0))])
    assert changes.new_tasks == changes.changed_tasks == changes.new_runs == []
    assert [a["type"] for a in changes.activity] == ["run.started"]


def test_feeding_in_parts_gives_the_rows_of_feeding_at_once() -> None:
    events = [
        stored(0, TaskCreated(task_id=7, title="Sky", at=1.0)),
        stored(1, RunRequested(task_id=7, run_id="r", at=2.0)),
        stored(2, RunStarted(task_id=7, run_id="r", at=3.0)),
    ]
    parts = Fold()
    activity = parts.feed(events[:1]) + parts.feed(events[1:])
    at_once = fold_batch({}, {}, events)
    assert activity == at_once.activity
    assert parts.changes().new_tasks == at_once.new_tasks
