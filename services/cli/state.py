"""`ragpoc state`: a task and its runs as the projection saw them after a given event (time
travel). The task's history (Redis, and the SQL event archive for whatever Redis trimmed) up to
--at is folded through the same pure projections the projector uses. Writes nothing."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from libs.events.ids import entry_key
from libs.events.store import StoredEntry, Undecodable
from libs.readmodels.archive import task_history
from libs.readmodels.projection import RunView, TaskView, project_run, project_task
from services.cli.reading import Sources, run_reader
from services.cli.render import BOUNDS_HELP, high_key, iso, parse_bound, quote, task_id
from services.cli.settings import Subparsers

__all__ = ["Folded", "add_parser", "fold", "run"]


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "state",
        help="A task as the projection saw it at an entry id or time",
        description=(
            "Print a task and its runs as the projection saw them after a given event (time\n"
            "travel): the task's events up to and including --at are folded through the same\n"
            "pure projections the projector uses. Without --at, the current state.\n"
            "Exits with 1 if the task has no events (or did not exist yet at --at)."
        ),
        epilog=(
            BOUNDS_HELP + "\n\nexamples:\n"
            "  ragpoc state 42\n"
            "  ragpoc state 42 --at 1764244800123-0\n"
            "  ragpoc state 42 --at 2026-11-27T11:55:00Z --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task_id", type=task_id, metavar="TASK_ID", help="the task")
    parser.add_argument(
        "--at", type=parse_bound, metavar="X", help="last entry id or time to apply"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    async def body(sources: Sources) -> int:
        return await print_state(sources, args)

    return run_reader("state", body)


@dataclass(frozen=True, slots=True)
class Folded:
    """The task and its runs after `events` entries, the last of them `last_entry`."""

    task: TaskView | None
    runs: dict[str, RunView]
    events: int
    last_entry: str


def fold(entries: Sequence[StoredEntry]) -> Folded:
    """The task and its runs after applying `entries` in order, as the projector would (an
    entry that is not a known event changes nothing)."""
    task: TaskView | None = None
    runs: dict[str, RunView] = {}
    for entry in entries:
        if isinstance(entry, Undecodable):
            continue
        event = entry.event
        task = project_task(task, event)
        if event.run_id:
            view = project_run(runs.get(event.run_id), event)
            if view is not None:
                runs[event.run_id] = view
    last = entries[-1].stream_id if entries else ""
    return Folded(task=task, runs=runs, events=len(entries), last_entry=last)


async def print_state(sources: Sources, args: argparse.Namespace) -> int:
    entries = await task_history(sources.store, sources.archive, args.task_id, lenient=True)
    if not entries:
        print(f"ragpoc state: task {args.task_id} has no events", file=sys.stderr)
        return 1
    at = high_key(args.at)
    folded = fold([entry for entry in entries if entry_key(entry.stream_id) <= at])
    if folded.task is None:
        where = f" at {args.at}" if args.at is not None else ""
        print(f"ragpoc state: task {args.task_id} did not exist{where}", file=sys.stderr)
        return 1
    if args.json:
        print(state_json(folded, len(entries)))
    else:
        print("\n".join(render_state(folded, folded.task, len(entries))))
    return 0


def render_state(folded: Folded, task: TaskView, total: int) -> list[str]:
    lines = [
        f"task {task.id}: {task.title}",
        f"  status:      {task.status}",
        f"  created:     {iso(task.created_at)}",
        f"  updated:     {iso(task.updated_at)}",
        f"  runs:        {task.runs}" + (f" (last {task.last_run_id[:8]})" if task.runs else ""),
    ]
    if task.description:
        lines.append(f"  description: {quote(task.description, 200)}")
    if task.last_answer:
        lines.append(f"  last answer: {quote(task.last_answer, 200)}")
    if task.last_error:
        lines.append(f"  last error:  {quote(task.last_error, 200)}")
    lines.append(f"as of entry {folded.last_entry} ({folded.events} of {total} events)")
    lines += [render_run(run) for run in folded.runs.values()]
    return lines


def render_run(run: RunView) -> str:
    text = (
        f"run {run.run_id[:8]}  {run.status:<10} fence {run.fence}  requested "
        f"{iso(run.requested_at)}  started {iso(run.started_at)}  finished {iso(run.finished_at)}"
    )
    if run.query:
        text += f"\n  query:  {quote(run.query, 200)}"
    if run.answer:
        text += f"\n  answer: {quote(run.answer, 200)}"
    if run.error:
        text += f"\n  error:  {quote(run.error, 200)}"
    return text


def state_json(folded: Folded, total: int) -> str:
    body = {
        "at": folded.last_entry,
        "events": folded.events,
        "total_events": total,
        "task": msgspec.to_builtins(folded.task),
        "runs": [msgspec.to_builtins(run) for run in folded.runs.values()],
    }
    return json.dumps(body, ensure_ascii=False)
