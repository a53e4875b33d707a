"""`ragpoc events` and `ragpoc state`: replay the event log for debugging.

- `ragpoc events TASK_ID` prints a task's stream, one line per event (or `--json` lines);
  `--since`/`--until` bound it by entry id or time; `--follow` keeps tailing it.
- `ragpoc events` (no task) prints every partition log merged in entry-id order;
  `ragpoc events --follow` tails every task live.
- `ragpoc state TASK_ID [--at ENTRY_ID]` folds the task's events through the same pure
  projections as the projector and prints the task and its runs as they stood then.

Reads Redis and, for whatever Redis trimmed, the SQL event archive (`DATABASE_URL`); writes
nothing. Output goes to stdout, errors to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common import Settings
from libs.events import (
    AnyEvent,
    EventDecodeError,
    Keys,
    LlmDelta,
    StoredEvent,
    connect_redis,
    decode_event,
    event_to_builtins,
)
from libs.events.ids import entry_key
from libs.events.store import Entries, last_generated_id
from libs.readmodels import create_engine
from libs.readmodels.archive import FIRST_KEY, LAST_KEY, EntryKey, partition_gap, task_gap
from libs.readmodels.projection import RunView, TaskView, project_run, project_task, summarize
from services.cli_settings import settings_for

__all__ = ["build_events_parser", "build_state_parser", "main"]

DEFAULT_LIMIT = 1000
BLOCK_MS = 1000
_ENTRY_ID = re.compile(r"^\d+(-\d+)?$")


# ---------------------------------------------------------------- parsing of bounds


def parse_bound(raw: str) -> str:
    """An XRANGE bound from an entry id (`1700000000000-0`, or just ms) or an ISO-8601 time
    (converted to ms; a time without a zone is UTC). Redis completes a bare ms as seq 0 for a
    start and as the largest seq for an end, so both bounds are inclusive."""
    text = raw.strip()
    if _ENTRY_ID.match(text):
        return text
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is neither an entry id (1700000000000-0, or ms) nor an ISO-8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return str(int(moment.timestamp() * 1000))


def _task_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError("must be a task id (a whole number)")
    return value


def _count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError("must be a whole number, 0 or more")
    return value


# ---------------------------------------------------------------- parsers

_BOUNDS_HELP = (
    "bounds: an entry id (1700000000000-0), a bare ms timestamp (1700000000000) or an\n"
    "ISO-8601 time (2026-11-27T11:55:00Z; UTC when no zone is given). Times are matched\n"
    "against the entry ids (when Redis stored the event); both bounds are inclusive."
)


def build_events_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragpoc events",
        description=(
            "Print a task's event log, one line per event: entry id, time, type, run id\n"
            "(short) and a summary. Without TASK_ID, print every partition log merged in\n"
            "entry-id order (the newest --limit events, or the first --limit after --since).\n"
            "With --follow, keep printing new events until Ctrl-C."
        ),
        epilog=(
            _BOUNDS_HELP + "\n\nexamples:\n"
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
        "task_id", nargs="?", type=_task_id, metavar="TASK_ID", help="the task (default: all)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--since", type=parse_bound, metavar="X", help="first entry id or time")
    parser.add_argument("--until", type=parse_bound, metavar="X", help="last entry id or time")
    parser.add_argument(
        "--follow", "-f", action="store_true", help="after the history, tail new events live"
    )
    parser.add_argument(
        "--limit",
        type=_count,
        metavar="N",
        help=f"print at most N past events (default: all of a task's; {DEFAULT_LIMIT} across "
        "all tasks); 0 with --follow prints only new events",
    )
    parser.add_argument(
        "--max-events",
        type=_count,
        metavar="N",
        help="with --follow: stop after printing N events in all, history included (for scripts)",
    )
    return parser


def build_state_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragpoc state",
        description=(
            "Print a task and its runs as the projection saw them after a given event (time\n"
            "travel): the task's events up to and including --at are folded through the same\n"
            "pure projections the projector uses. Without --at, the current state.\n"
            "Exits with 1 if the task has no events (or did not exist yet at --at)."
        ),
        epilog=(
            _BOUNDS_HELP + "\n\nexamples:\n"
            "  ragpoc state 42\n"
            "  ragpoc state 42 --at 1764244800123-0\n"
            "  ragpoc state 42 --at 2026-11-27T11:55:00Z --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task_id", type=_task_id, metavar="TASK_ID", help="the task")
    parser.add_argument(
        "--at", type=parse_bound, metavar="X", help="last entry id or time to apply"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


# ---------------------------------------------------------------- rows and rendering


@dataclass(frozen=True, slots=True)
class Row:
    """One stream entry: its id, the task it belongs to and its event (None if undecodable)."""

    entry_id: str
    task_id: int
    kind: str
    event: AnyEvent | None
    error: str = ""


def decode_row(entry_id: str, fields: dict[str, str], task_id: int | None = None) -> Row:
    kind = fields.get("type", "?")
    task = task_id if task_id is not None else int(fields.get("task", "-1") or -1)
    try:
        event = decode_event(fields.get("data", ""))
    except EventDecodeError as exc:
        return Row(entry_id, task, kind, None, str(exc))
    return Row(entry_id, event.task_id, kind, event)


def stored_row(stored: StoredEvent, entry_id: str) -> Row:
    """An archived event as a row (archived events always decode)."""
    tag = str(type(stored.event).__struct_config__.tag)
    return Row(entry_id, stored.event.task_id, tag, stored.event)


def iso(at: float | None) -> str:
    if at is None:
        return "-"
    text = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def describe(event: AnyEvent) -> str:
    summary = summarize(event)
    if summary is not None:
        return summary
    if isinstance(event, LlmDelta):
        return f"delta #{event.index} {_quote(event.text)}"
    return ""


def _quote(text: str, width: int = 80) -> str:
    shown = text if len(text) <= width else text[: width - 1] + "…"
    return json.dumps(shown, ensure_ascii=False)


def render_line(row: Row, *, with_task: bool) -> str:
    task = f"task {row.task_id:<6} " if with_task else ""
    if row.event is None:
        return f"{row.entry_id}  {'?':<24}  {task}{row.kind:<15} {'-':<8}  undecodable: {row.error}"
    event = row.event
    run = event.run_id[:8] or "-"
    return f"{row.entry_id}  {iso(event.at):<24}  {task}{row.kind:<15} {run:<8}  {describe(event)}"


def render_json(row: Row) -> str:
    if row.event is None:
        body: dict[str, Any] = {"type": row.kind, "task_id": row.task_id, "error": row.error}
    else:
        body = event_to_builtins(row.event)
    return json.dumps({"id": row.entry_id, **body}, ensure_ascii=False)


class Printer:
    """Prints rows in the chosen format and counts them (for --max-events)."""

    def __init__(self, *, as_json: bool, with_task: bool, max_events: int | None) -> None:
        self.as_json = as_json
        self.with_task = with_task
        self.max_events = max_events
        self.printed = 0

    @property
    def done(self) -> bool:
        return self.max_events is not None and self.printed >= self.max_events

    def emit(self, row: Row) -> None:
        if self.done:
            return
        line = render_json(row) if self.as_json else render_line(row, with_task=self.with_task)
        print(line, flush=True)
        self.printed += 1


# ---------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Sources:
    """Where events are read from: Redis, and the SQL archive for what Redis trimmed (None
    when there is no archive to read)."""

    redis: aioredis.Redis
    keys: Keys
    archive: AsyncEngine | None


def _at_or_after(entry_id: str, since: str) -> bool:
    """Whether `entry_id` is at or after `since` (a bare ms covers every seq of that ms)."""
    if "-" in since:
        return entry_key(entry_id) >= entry_key(since)
    return entry_key(entry_id)[0] >= int(since)


def _in_bounds(entry_id: str, low: str, high: str) -> bool:
    return (low == "-" or _at_or_after(entry_id, low)) and (high == "+" or _within(entry_id, high))


def _low_key(low: str) -> EntryKey:
    return FIRST_KEY if low == "-" else entry_key(low)


def _high_key(high: str) -> EntryKey:
    if high == "+":
        return LAST_KEY
    return entry_key(high) if "-" in high else (int(high), LAST_KEY[1])


async def with_task_gap(
    sources: Sources, task_id: int, rows: list[Row], low: str, high: str
) -> list[Row]:
    """`rows` (a read of the task's stream in [low, high]) preceded by the archived events in
    that range that Redis trimmed."""
    if sources.archive is None:
        return rows
    first = rows[0].entry_id if rows else None
    gap = await task_gap(sources.archive, task_id, after="0-0", first_in_redis=first)
    return [
        stored_row(stored, stored.stream_id)
        for stored in gap
        if _in_bounds(stored.stream_id, low, high)
    ] + rows


def _upper(until: str | None, snapshot: str) -> str:
    """The smaller of --until and the snapshot id (what follow starts after)."""
    if until is None or entry_key(until) > entry_key(snapshot):
        return snapshot
    return until


async def read_range(
    redis: aioredis.Redis,
    stream: str,
    low: str,
    high: str,
    *,
    limit: int | None,
    newest: bool,
    task_id: int | None = None,
) -> list[Row]:
    """Entries between `low` and `high` (inclusive), oldest first; with a limit, the first
    `limit` of them, or the last `limit` when `newest`."""
    if limit == 0:
        return []
    if newest:
        reply = await redis.xrevrange(stream, high, low, count=limit)
        entries = list(reversed(cast(Entries, reply)))
    else:
        entries = cast(Entries, await redis.xrange(stream, low, high, count=limit))
    return [decode_row(entry_id, fields, task_id) for entry_id, fields in entries]


async def read_partitions(
    sources: Sources,
    partitions: Sequence[int],
    low: str,
    highs: dict[str, str],
    *,
    limit: int,
    newest: bool,
) -> list[Row]:
    """Every partition log's entries in [low, high] (those Redis trimmed from the archive),
    merged by entry id, at most `limit`: the first ones, or the last ones when `newest`."""
    rows: list[Row] = []
    for partition in partitions:
        stream = sources.keys.partition_log(partition)
        high = highs[stream]
        found = await read_range(sources.redis, stream, low, high, limit=limit, newest=newest)
        if sources.archive is not None:
            gap = await partition_gap(
                sources.archive,
                partition,
                [row.entry_id for row in found],
                low=_low_key(low),
                high=_high_key(high),
                limit=limit,
                newest=newest,
            )
            found = [stored_row(stored, stored.entry_id) for stored in gap] + found
        rows += found[-limit:] if newest else found[:limit]
    rows.sort(key=lambda row: entry_key(row.entry_id))
    return rows[-limit:] if newest and limit else rows[:limit]


async def tail(
    redis: aioredis.Redis,
    positions: dict[str, str],
    printer: Printer,
    *,
    task_id: int | None,
    since: str | None,
) -> None:
    """Print entries as they arrive after `positions` until --max-events (or forever)."""
    while not printer.done:
        reply = await redis.xread(positions, count=100, block=BLOCK_MS)  # type: ignore[arg-type]
        for stream, entries in cast(list[tuple[str, Entries]], reply or []):
            for entry_id, fields in entries:
                positions[stream] = entry_id
                if since is None or entry_key(entry_id) >= entry_key(since):
                    printer.emit(decode_row(entry_id, fields, task_id))


# ---------------------------------------------------------------- commands


async def run_events(sources: Sources, args: argparse.Namespace) -> int:
    redis, keys = sources.redis, sources.keys
    with_task = args.task_id is None
    printer = Printer(as_json=args.json, with_task=with_task, max_events=args.max_events)
    if args.task_id is not None:
        streams = [keys.task_events(args.task_id)]
        if not args.follow and not await redis.exists(streams[0]):
            print(f"ragpoc events: task {args.task_id} has no events", file=sys.stderr)
            return 1
    else:
        streams = keys.partition_logs()
    snapshot = {stream: await last_generated_id(redis, stream) for stream in streams}
    for row in await _history(sources, streams, snapshot, args):
        printer.emit(row)
    if args.follow and not printer.done:
        what = "every task" if args.task_id is None else f"task {args.task_id}"
        print(f"ragpoc events: following {what} live (Ctrl-C stops)", file=sys.stderr, flush=True)
        await tail(redis, dict(snapshot), printer, task_id=args.task_id, since=args.since)
    return 0


async def _history(
    sources: Sources, streams: list[str], snapshot: dict[str, str], args: argparse.Namespace
) -> list[Row]:
    low = args.since or "-"
    highs = {stream: _upper(args.until, snapshot[stream]) for stream in streams}
    if args.task_id is not None:
        stream = streams[0]
        if snapshot[stream] == "0-0" or args.limit == 0:
            return []
        rows = await read_range(
            sources.redis,
            stream,
            low,
            highs[stream],
            limit=args.limit,
            newest=False,
            task_id=args.task_id,
        )
        rows = await with_task_gap(sources, args.task_id, rows, low, highs[stream])
        return rows[: args.limit]
    live = [
        p
        for p in range(sources.keys.partitions)
        if snapshot[sources.keys.partition_log(p)] != "0-0"
    ]
    limit = DEFAULT_LIMIT if args.limit is None else args.limit
    if limit == 0:
        return []
    newest = args.since is None
    return await read_partitions(sources, live, low, highs, limit=limit, newest=newest)


@dataclass(frozen=True, slots=True)
class Folded:
    task: TaskView | None
    runs: dict[str, RunView]
    events: int
    last_entry: str


def fold(rows: Sequence[Row]) -> Folded:
    """The task and its runs after applying `rows` in order, as the projector would."""
    task: TaskView | None = None
    runs: dict[str, RunView] = {}
    for row in rows:
        event = row.event
        if event is None:
            continue
        task = project_task(task, event)
        if event.run_id:
            run = project_run(runs.get(event.run_id), event)
            if run is not None:
                runs[event.run_id] = run
    last = rows[-1].entry_id if rows else ""
    return Folded(task=task, runs=runs, events=len(rows), last_entry=last)


def render_state(folded: Folded, total: int) -> list[str]:
    task = folded.task
    assert task is not None
    lines = [
        f"task {task.id}: {task.title}",
        f"  status:      {task.status}",
        f"  created:     {iso(task.created_at)}",
        f"  updated:     {iso(task.updated_at)}",
        f"  runs:        {task.runs}" + (f" (last {task.last_run_id[:8]})" if task.runs else ""),
    ]
    if task.description:
        lines.append(f"  description: {_quote(task.description, 200)}")
    if task.last_answer:
        lines.append(f"  last answer: {_quote(task.last_answer, 200)}")
    if task.last_error:
        lines.append(f"  last error:  {_quote(task.last_error, 200)}")
    lines.append(f"as of entry {folded.last_entry} ({folded.events} of {total} events)")
    lines += [render_run(run) for run in folded.runs.values()]
    return lines


def render_run(run: RunView) -> str:
    text = (
        f"run {run.run_id[:8]}  {run.status:<10} fence {run.fence}  requested "
        f"{iso(run.requested_at)}  started {iso(run.started_at)}  finished {iso(run.finished_at)}"
    )
    if run.query:
        text += f"\n  query:  {_quote(run.query, 200)}"
    if run.answer:
        text += f"\n  answer: {_quote(run.answer, 200)}"
    if run.error:
        text += f"\n  error:  {_quote(run.error, 200)}"
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


async def run_state(sources: Sources, args: argparse.Namespace) -> int:
    stream = sources.keys.task_events(args.task_id)
    rows = await read_range(
        sources.redis, stream, "-", "+", limit=None, newest=False, task_id=args.task_id
    )
    rows = await with_task_gap(sources, args.task_id, rows, "-", "+")
    if not rows:
        print(f"ragpoc state: task {args.task_id} has no events", file=sys.stderr)
        return 1
    upto = rows if args.at is None else [r for r in rows if _within(r.entry_id, args.at)]
    folded = fold(upto)
    if folded.task is None:
        where = f" at {args.at}" if args.at is not None else ""
        print(f"ragpoc state: task {args.task_id} did not exist{where}", file=sys.stderr)
        return 1
    if args.json:
        print(state_json(folded, len(rows)))
    else:
        print("\n".join(render_state(folded, len(rows))))
    return 0


def _within(entry_id: str, at: str) -> bool:
    """Whether `entry_id` is at or before `at` (a bare ms covers every seq of that ms)."""
    if "-" in at:
        return entry_key(entry_id) <= entry_key(at)
    return entry_key(entry_id)[0] <= int(at)


# ---------------------------------------------------------------- entry point


def archive_url(settings: Settings) -> str | None:
    """The database holding the event archive; None when it is a SQLite file that does not
    exist (reading must not create it)."""
    url = settings.sqlalchemy_url
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return None
    return url


async def open_archive(url: str | None, command: str) -> AsyncEngine | None:
    """The SQL event archive, or None when there is none to read: no database, no `events`
    table, or a database that does not answer (then with a warning: only what Redis still
    holds is shown)."""
    if url is None:
        return None
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            found = await conn.run_sync(lambda sync: sa.inspect(sync).has_table("events"))
    except (SQLAlchemyError, OSError) as exc:
        print(
            f"ragpoc {command}: cannot read the event archive ({exc}); showing only what "
            "Redis still holds",
            file=sys.stderr,
        )
        found = False
    if not found:
        await engine.dispose()
        return None
    return engine


async def _run(settings: Settings, command: str, args: argparse.Namespace) -> int:
    keys = Keys(namespace=settings.namespace, partitions=settings.partitions)
    redis = connect_redis(settings.redis_url, max_connections=4, socket_timeout=BLOCK_MS / 1000 + 5)
    archive = await open_archive(archive_url(settings), command)
    sources = Sources(redis, keys, archive)
    try:
        if command == "events":
            return await run_events(sources, args)
        return await run_state(sources, args)
    finally:
        await redis.aclose()
        if archive is not None:
            await archive.dispose()


def main(argv: list[str]) -> int:
    """`argv[0]` is "events" or "state"; the rest are that command's arguments."""
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    parsers = {"events": build_events_parser, "state": build_state_parser}
    if command not in parsers:
        print("usage: ragpoc {events,state} ... (see --help of each)", file=sys.stderr)
        return 2
    parser = parsers[command]()
    args = parser.parse_args(rest)
    if command == "events" and args.follow and args.until is not None:
        parser.error("--until cannot be combined with --follow")
    if command == "events" and args.max_events is not None and not args.follow:
        parser.error("--max-events only applies with --follow (use --limit)")
    settings = settings_for(command, needs_redis=True)
    if settings is None:
        return 2
    try:
        return asyncio.run(_run(settings, command, args))
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `ragpoc events ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except aioredis.ConnectionError as exc:
        print(
            f"ragpoc {command}: cannot reach Redis at {settings.redis_url}: {exc}", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
