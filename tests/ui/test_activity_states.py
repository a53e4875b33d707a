"""The Activity endpoint gives each item the task as the projection saw it right after that
event (`task_states`), so the web UI shows the server's projection at any point of the timeline
and folds no events itself."""

from __future__ import annotations

from libs.events import LlmDelta, RunCompleted, RunRequested, RunStarted, StoredEvent, TaskCreated
from services.gateway.tasks_api import task_states

HISTORY = [
    StoredEvent("1-0", "10-0", TaskCreated(task_id=1, title="Sky", description="", at=1.0)),
    StoredEvent("1-1", "10-1", RunRequested(task_id=1, run_id="r1", at=2.0)),
    StoredEvent("1-2", "11-0", RunStarted(task_id=1, run_id="r1", at=3.0)),
    StoredEvent("1-3", "11-1", LlmDelta(task_id=1, run_id="r1", index=0, text="blue", at=4.0)),
    StoredEvent("1-4", "12-0", RunCompleted(task_id=1, run_id="r1", answer="blue", at=5.0)),
]


def test_each_item_gets_the_task_right_after_its_event() -> None:
    states = task_states(HISTORY, ["10-0", "10-1", "11-0", "12-0"])
    assert [s.status if s else None for s in states] == ["new", "queued", "running", "done"]
    done = states[-1]
    assert done is not None
    assert (done.last_run_id, done.last_answer, done.runs) == ("r1", "blue", 1)


def test_items_after_a_cursor_still_see_the_whole_history() -> None:
    states = task_states(HISTORY, ["12-0"])
    assert [s.status if s else None for s in states] == ["done"]


def test_no_items_no_states() -> None:
    assert task_states(HISTORY, []) == []
