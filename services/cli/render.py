"""What `ragpoc events` and `ragpoc state` share: their argument types (bounds given as an entry
id or a time) and how an event is printed, as a line or as JSON."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime
from typing import Any

from libs.events import AnyEvent, LlmDelta, event_to_builtins
from libs.events.ids import entry_key
from libs.events.store import StoredEntry, Undecodable
from libs.readmodels.archive import FIRST_KEY, LAST_KEY, EntryKey
from libs.readmodels.projection import summarize

__all__ = [
    "BOUNDS_HELP",
    "count",
    "high_key",
    "iso",
    "low_key",
    "parse_bound",
    "quote",
    "render_json",
    "render_line",
    "task_id",
    "task_of",
]

BOUNDS_HELP = (
    "bounds: an entry id (1700000000000-0), a bare ms timestamp (1700000000000) or an\n"
    "ISO-8601 time (2026-11-27T11:55:00Z; UTC when no zone is given). Times are matched\n"
    "against the entry ids (when Redis stored the event); both bounds are inclusive."
)
_ENTRY_ID = re.compile(r"^\d+(-\d+)?$")


# ---------------------------------------------------------------- arguments


def parse_bound(raw: str) -> str:
    """A bound from an entry id (`1700000000000-0`, or just ms) or an ISO-8601 time (converted
    to ms; a time without a zone is UTC). A bare ms covers every entry of that millisecond:
    from its first as a lower bound, to its last as an upper one."""
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


def low_key(bound: str | None) -> EntryKey:
    """The first entry id a lower bound (from `parse_bound`, None for none) admits."""
    return FIRST_KEY if bound is None else entry_key(bound)


def high_key(bound: str | None) -> EntryKey:
    """The last entry id an upper bound (from `parse_bound`, None for none) admits."""
    if bound is None:
        return LAST_KEY
    return entry_key(bound) if "-" in bound else (int(bound), LAST_KEY[1])


def task_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError("must be a task id (a whole number)")
    return value


def count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError("must be a whole number, 0 or more")
    return value


# ---------------------------------------------------------------- printing


def iso(at: float | None) -> str:
    if at is None:
        return "-"
    text = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def quote(text: str, width: int = 80) -> str:
    """`text` as a JSON string, cut to `width` characters."""
    shown = text if len(text) <= width else text[: width - 1] + "…"
    return json.dumps(shown, ensure_ascii=False)


def _describe(event: AnyEvent) -> str:
    summary = summarize(event)
    if summary is not None:
        return summary
    if isinstance(event, LlmDelta):
        return f"delta #{event.index} {quote(event.text)}"
    return ""


def task_of(entry: StoredEntry, default: int = -1) -> int:
    """The entry's task: its event's, else what the entry says, else `default`."""
    if isinstance(entry, Undecodable):
        return default if entry.task_id is None else entry.task_id
    return entry.event.task_id


def render_line(entry_id: str, entry: StoredEntry, *, task: int | None = None) -> str:
    """The entry as one line: its id, time, type, run id (short) and a summary; with `task`
    (the entry's, see `task_of`), a task column after the time."""
    column = "" if task is None else f"task {task:<6} "
    if isinstance(entry, Undecodable):
        kind = entry.type or "?"
        return f"{entry_id}  {'?':<24}  {column}{kind:<15} {'-':<8}  undecodable: {entry.error}"
    event = entry.event
    kind = str(type(event).__struct_config__.tag)
    run = event.run_id[:8] or "-"
    return f"{entry_id}  {iso(event.at):<24}  {column}{kind:<15} {run:<8}  {_describe(event)}"


def render_json(entry_id: str, entry: StoredEntry, *, task: int) -> str:
    """The entry as one JSON object: its id and the event's fields, or, for an entry that does
    not decode, its type, `task` (the entry's, see `task_of`) and the error."""
    if isinstance(entry, Undecodable):
        body: dict[str, Any] = {"type": entry.type or "?", "task_id": task, "error": entry.error}
    else:
        body = event_to_builtins(entry.event)
    return json.dumps({"id": entry_id, **body}, ensure_ascii=False)
