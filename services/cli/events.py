"""`ragpoc events`: print a task's event log, or every task's, and with --follow tail it live.

- `ragpoc events TASK_ID` prints the task's stream, one line per event (or `--json` lines);
  `--since`/`--until` bound it by entry id or time.
- `ragpoc events` (no task) prints every partition log merged in entry-id order.

History comes from Redis and, for whatever Redis trimmed, from the SQL event archive; an entry
that is not a known event is printed as such ("undecodable: ..."). Writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import aclosing

from libs.events.ids import entry_key
from libs.events.store import StoredEntry, last_generated_id
from libs.readmodels.archive import EntryKey, partition_events, task_history
from services.cli.reading import BLOCK_MS, Sources, run_reader
from services.cli.render import (
    BOUNDS_HELP,
    count,
    high_key,
    low_key,
    parse_bound,
    render_json,
    render_line,
    task_id,
    task_of,
)
from services.cli.settings import Subparsers

__all__ = ["DEFAULT_LIMIT", "add_parser", "run"]

DEFAULT_LIMIT = 1000  # past events printed across all tasks without --limit


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "events",
        help="Print or follow a task's event log, or every task's",
        description=(
            "Print a task's event log, one line per event: entry id, time, type, run id\n"
            "(short) and a summary. Without TASK_ID, print every partition log merged in\n"
            "entry-id order (the newest --limit events, or the first --limit after --since).\n"
            "With --follow, keep printing new events until Ctrl-C."
        ),
        epilog=(
            BOUNDS_HELP + "\n\nexamples:\n"
            "  ragpoc events 42\n"
            "  ragpoc events 42 --json | jq .type\n"
            "  ragpoc events 42 --since 2026-11-27T11:00:00Z --until 1764244800000\n"
            "  ragpoc events 42 --follow\n"
            "  ragpoc events --follow              # every task, live\n"
            "  ragpoc events --since 1764244800000-0 --limit 50"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "task_id", nargs="?", type=task_id, metavar="TASK_ID", help="the task (default: all)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--since", type=parse_bound, metavar="X", help="first entry id or time")
    parser.add_argument("--until", type=parse_bound, metavar="X", help="last entry id or time")
    parser.add_argument(
        "--follow", "-f", action="store_true", help="after the history, tail new events live"
    )
    parser.add_argument(
        "--limit",
        type=count,
        metavar="N",
        help=f"print at most N past events (default: all of a task's; {DEFAULT_LIMIT} across "
        "all tasks); 0 with --follow prints only new events",
    )
    parser.add_argument(
        "--max-events",
        type=count,
        metavar="N",
        help="with --follow: stop after printing N events in all, history included (for scripts)",
    )
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.follow and args.until is not None:
        parser.error("--until cannot be combined with --follow")
    if args.max_events is not None and not args.follow:
        parser.error("--max-events only applies with --follow (use --limit)")

    async def body(sources: Sources) -> int:
        return await print_events(sources, args)

    return run_reader("events", body)


class Printer:
    """Prints entries in the chosen format and counts them (for --max-events). One task's
    entries are shown by their id in its stream, every task's by their partition-log id."""

    def __init__(self, *, as_json: bool, task_id: int | None, max_events: int | None) -> None:
        self.as_json = as_json
        self.task_id = task_id
        self.max_events = max_events
        self.printed = 0

    @property
    def done(self) -> bool:
        return self.max_events is not None and self.printed >= self.max_events

    def emit(self, entry: StoredEntry) -> None:
        if self.done:
            return
        every_task = self.task_id is None
        shown = entry.entry_id if every_task else entry.stream_id
        task = task_of(entry, -1 if self.task_id is None else self.task_id)
        if self.as_json:
            line = render_json(shown, entry, task=task)
        else:
            line = render_line(shown, entry, task=task if every_task else None)
        print(line, flush=True)
        self.printed += 1


async def print_events(sources: Sources, args: argparse.Namespace) -> int:
    redis, keys = sources.store.redis, sources.store.keys
    printer = Printer(as_json=args.json, task_id=args.task_id, max_events=args.max_events)
    if args.task_id is not None:
        streams = [keys.task_events(args.task_id)]
        if not args.follow and not await redis.exists(streams[0]):
            print(f"ragpoc events: task {args.task_id} has no events", file=sys.stderr)
            return 1
    else:
        streams = keys.partition_logs()
    # where every stream stands now: the history ends there, and following starts after it
    snapshot = {stream: await last_generated_id(redis, stream) for stream in streams}
    for entry in await _history(sources, snapshot, args):
        printer.emit(entry)
    if args.follow and not printer.done:
        what = "every task" if args.task_id is None else f"task {args.task_id}"
        print(f"ragpoc events: following {what} live (Ctrl-C stops)", file=sys.stderr, flush=True)
        since = None if args.since is None else low_key(args.since)
        await _follow(sources, snapshot, printer, since)
    return 0


async def _history(
    sources: Sources, snapshot: dict[str, str], args: argparse.Namespace
) -> list[StoredEntry]:
    """What was there up to `snapshot`, within --since and --until, at most --limit."""
    low, until = low_key(args.since), high_key(args.until)
    if args.task_id is not None:
        [tail] = snapshot.values()
        if tail == "0-0":
            return []
        high = min(until, entry_key(tail))
        return await task_history(
            sources.store,
            sources.archive,
            args.task_id,
            low=low,
            high=high,
            limit=args.limit,
            lenient=True,
        )
    limit = DEFAULT_LIMIT if args.limit is None else args.limit
    if limit == 0:
        return []
    newest = args.since is None  # the newest --limit, or the first --limit after --since
    found: list[StoredEntry] = []
    for partition in range(sources.store.keys.partitions):
        tail = snapshot[sources.store.keys.partition_log(partition)]
        if tail == "0-0":  # no such log: nothing to read, in Redis or the archive
            continue
        found += await partition_events(
            sources.store,
            sources.archive,
            partition,
            low=low,
            high=min(until, entry_key(tail)),
            limit=limit,
            newest=newest,
            lenient=True,
        )
    found.sort(key=lambda entry: entry_key(entry.entry_id))
    return found[-limit:] if newest else found[:limit]


async def _follow(
    sources: Sources, snapshot: dict[str, str], printer: Printer, since: EntryKey | None
) -> None:
    """Print entries as they arrive after `snapshot` (those from `since` on) until
    --max-events, or forever."""
    follow = sources.store.follow_entries(list(snapshot), snapshot, block_ms=BLOCK_MS)
    async with aclosing(follow) as arrivals:
        async for arrival in arrivals:
            if arrival is not None:
                entry = arrival[1]
                if since is None or entry_key(entry.entry_id) >= since:
                    printer.emit(entry)
            if printer.done:
                return
