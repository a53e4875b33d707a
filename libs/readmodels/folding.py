"""Folding a run of events over the task and run rows they touch, in memory: no I/O.

`Fold` starts from the rows as they stand (those the events name, as loaded by the writer, or
none at all for a rebuild), takes events in log order through the pure projection functions and
says what to write: the Activity rows of the events (`feed`), then the task and run rows to
insert and to update (`changes`). The writer applies that with one statement per kind of row,
so a batch costs the same few statements however many events it holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from libs.events import AnyEvent, StoredEvent
from libs.readmodels.projection import RunView, TaskView, project_run, project_task, summarize

__all__ = ["Fold", "RowChanges", "event_type", "fold_batch"]

Row = dict[str, Any]

_TAGS: dict[type[AnyEvent], str] = {}


def event_type(event: AnyEvent) -> str:
    """The event's type tag (what the archive and the Activity rows store)."""
    kind = type(event)
    tag = _TAGS.get(kind)
    if tag is None:
        tag = _TAGS[kind] = str(kind.__struct_config__.tag)
    return tag


@dataclass(slots=True)
class RowChanges:
    """What a fold asks the writer to do: rows as column -> value mappings, each list in the
    order the rows were first touched."""

    activity: list[Row] = field(default_factory=list)
    new_tasks: list[Row] = field(default_factory=list)
    changed_tasks: list[Row] = field(default_factory=list)
    new_runs: list[Row] = field(default_factory=list)
    changed_runs: list[Row] = field(default_factory=list)


class Fold:
    """The task and run rows as events move them. `tasks` and `runs` are the rows stored now;
    an id missing from them has no row yet (the writer loads every id its events name, a
    rebuild starts from empty tables)."""

    __slots__ = ("_runs", "_runs_before", "_tasks", "_tasks_before")

    def __init__(
        self, tasks: Mapping[int, TaskView] | None = None, runs: Mapping[str, RunView] | None = None
    ) -> None:
        self._tasks_before: dict[int, TaskView] = dict(tasks or {})
        self._runs_before: dict[str, RunView] = dict(runs or {})
        self._tasks: dict[int, TaskView | None] = dict(self._tasks_before)
        self._runs: dict[str, RunView | None] = dict(self._runs_before)

    def feed(self, events: Iterable[StoredEvent]) -> list[Row]:
        """Fold `events` (in log order) on top of what was fed before; returns their Activity
        rows (an event too fine-grained to list has none)."""
        tasks, runs = self._tasks, self._runs
        activity: list[Row] = []
        for stored in events:
            event = stored.event
            task_id = event.task_id
            tasks[task_id] = project_task(tasks.get(task_id), event)
            run_id = event.run_id
            if run_id:
                runs[run_id] = project_run(runs.get(run_id), event)
            summary = summarize(event)
            if summary is not None:
                activity.append(
                    {
                        "task_id": task_id,
                        "entry_id": stored.stream_id,
                        "run_id": run_id,
                        "type": event_type(event),
                        "at": event.at,
                        "summary": summary,
                    }
                )
        return activity

    def changes(self) -> RowChanges:
        """The task and run rows that differ from those stored: new ones, changed ones."""
        result = RowChanges()
        _diff(self._tasks_before, self._tasks, result.new_tasks, result.changed_tasks)
        _diff(self._runs_before, self._runs, result.new_runs, result.changed_runs)
        return result


def _diff(
    before: Mapping[Any, msgspec.Struct],
    after: Mapping[Any, msgspec.Struct | None],
    new: list[Row],
    changed: list[Row],
) -> None:
    asdict = msgspec.structs.asdict
    for key, row in after.items():
        if row is None:  # an event for a task or run that has no row: nothing to write
            continue
        old = before.get(key)
        if old is None:
            new.append(asdict(row))
        elif row != old:
            changed.append(asdict(row))


def fold_batch(
    tasks: Mapping[int, TaskView], runs: Mapping[str, RunView], events: Iterable[StoredEvent]
) -> RowChanges:
    """Fold `events` over the stored `tasks` and `runs` rows: every row change they make."""
    fold = Fold(tasks, runs)
    activity = fold.feed(events)
    result = fold.changes()
    result.activity = activity
    return result
