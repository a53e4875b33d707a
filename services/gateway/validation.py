"""Strict parsing of what a client sends, shared by every endpoint: ids, stream entry ids, query
parameters and JSON bodies. Anything malformed is an `ApiError` (a 4xx with a JSON body that
says what was wrong) raised before the request reads or writes anything.

The bounds are the stores': a task id is a signed 64-bit SQL column, a stream entry id is two
unsigned 64-bit numbers in Redis, PostgreSQL refuses NUL in text, and msgspec's decoder recurses
once per nesting level."""

from __future__ import annotations

import re
from collections.abc import Collection
from itertools import accumulate
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.requests import Request

from services.gateway.errors import ApiError

__all__ = [
    "MAX_ENTRY_PART",
    "MAX_ID",
    "MAX_JSON_DEPTH",
    "TaskId",
    "bounded_int",
    "check_values",
    "convert_json",
    "decode_json",
    "nesting_depth_exceeds",
    "parse_entry_id",
    "parse_id",
    "path_id",
    "query_choice",
    "query_count",
    "query_entry_id",
    "query_seconds",
    "require_json",
    "resume_entry_id",
    "shown",
]

T = TypeVar("T")

MAX_ID = 2**63 - 1
MAX_ENTRY_PART = 2**64 - 1
MAX_JSON_DEPTH = 32
TaskId = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
"""A task id in a msgspec Struct: what a signed 64-bit column holds, from 1."""

_DIGITS = re.compile(r"[0-9]+")  # ASCII only, unlike str.isdigit and \d
_ENTRY_ID = re.compile(r"([0-9]+)-([0-9]+)")
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # no sign, nan, inf
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # C0 but tab, LF, CR; and DEL
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[a-z0-9!#$&^_.+-]+\+)?json")
# A JSON string, or an unterminated one up to the end: matching once from each opening quote keeps
# the scan linear on any input (backtracking to later quotes of an unterminated string would not).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_JSON_NESTING = re.compile(rb"[\[\]{}]")
_INT_RANGE = (-(2**63), MAX_ENTRY_PART)


def shown(raw: str, limit: int = 40) -> str:
    """`raw` quoted for an error message, cut short: a hostile value is not echoed in full."""
    return repr(raw) if len(raw) <= limit else f"{raw[:limit]!r}... ({len(raw)} characters)"


def bounded_int(raw: str, high: int) -> int | None:
    """`raw` as an int if it is ASCII digits worth at most `high` (never converting a
    thousand-digit string), else None."""
    if not _DIGITS.fullmatch(raw) or len(raw.lstrip("0")) > len(str(high)):
        return None
    value = int(raw)
    return value if value <= high else None


# --- ids ----------------------------------------------------------------------------------


def parse_id(raw: str, what: str = "task id") -> int:
    value = bounded_int(raw, MAX_ID)
    if value is None or value < 1:
        raise ApiError(
            422, f"{what} must be an integer from 1 to {MAX_ID} in ASCII digits, got {shown(raw)}"
        )
    return value


def path_id(request: Request, name: str = "task_id", what: str = "task id") -> int:
    return parse_id(str(request.path_params[name]), what)


def parse_entry_id(raw: str) -> str | None:
    """A stream entry id `<ms>-<seq>` (each 0 to 2**64-1, ASCII digits), or None when `raw` is
    not one. Returned as a position the stores can read after: each part at most what the
    archive's BIGINT columns hold, seq one less (a reader asks for seq + 1). No entry lies
    between an id and its clamped form (entry ids are wall-clock milliseconds and small
    sequence numbers), so a stream resumed after either sends the same events."""
    match = _ENTRY_ID.fullmatch(raw)
    if match is None:
        return None
    ms, seq = (bounded_int(part, MAX_ENTRY_PART) for part in match.groups())
    if ms is None or seq is None:
        return None
    return f"{min(ms, MAX_ID)}-{min(seq, MAX_ID - 1)}"


def resume_entry_id(raw: str) -> str:
    """A Last-Event-ID that must be one stream entry id (400 otherwise: the stream never opens)."""
    entry_id = parse_entry_id(raw)
    if entry_id is None:
        raise ApiError(
            400,
            "Last-Event-ID must be a stream entry id <ms>-<seq> such as 1700000000000-0 "
            f"(ASCII digits, each at most {MAX_ENTRY_PART}), got {shown(raw)}",
        )
    return entry_id


# --- query parameters ---------------------------------------------------------------------


def _single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ApiError(422, f"{name} is given {len(values)} times: give it once")
    if values and _CONTROL.search(values[0]):
        raise ApiError(422, f"{name} contains a control character: {shown(values[0])}")
    return values[0] if values else None


def query_count(request: Request, name: str, default: int, high: int) -> int:
    """`?name=` as an integer from 1 to `high` (`default` when absent)."""
    raw = _single(request, name)
    if raw is None:
        return default
    value = bounded_int(raw, high)
    if value is None or value < 1:
        raise ApiError(422, f"{name} must be an integer from 1 to {high}, got {shown(raw)}")
    return value


def query_seconds(request: Request, name: str, high: float) -> float | None:
    """`?name=` as a number of seconds above 0 and at most `high` (a decimal number, with an
    exponent or not; no sign, nan or inf), or None when absent."""
    raw = _single(request, name)
    if raw is None:
        return None
    seconds = float(raw) if len(raw) <= 64 and _NUMBER.fullmatch(raw) else -1.0
    if not 0 < seconds <= high:
        raise ApiError(
            422,
            f"{name} must be a number of seconds above 0 and at most {high:g}, got {shown(raw)}",
        )
    return seconds


def query_choice(request: Request, name: str, choices: Collection[str]) -> str | None:
    """`?name=` as one of `choices`, or None when absent or empty."""
    raw = _single(request, name)
    if not raw:
        return None
    if raw not in choices:
        raise ApiError(422, f"{name} must be one of {', '.join(choices)}, got {shown(raw)}")
    return raw


def query_entry_id(request: Request, name: str, default: str) -> str:
    raw = _single(request, name)
    if raw is None:
        return default
    entry_id = parse_entry_id(raw)
    if entry_id is None:
        raise ApiError(
            422,
            f"{name} must be a stream entry id such as 1700000000000-0 (ASCII digits, each at "
            f"most {MAX_ENTRY_PART}), got {shown(raw)}",
        )
    return entry_id


# --- JSON bodies --------------------------------------------------------------------------


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON (`application/json` or `application/*+json`,
    with any parameters)."""
    declared = request.headers.get("content-type")
    media_type = (declared or "").split(";", 1)[0].strip().lower()
    if not _JSON_MEDIA_TYPE.fullmatch(media_type):
        got = f"got {shown(declared)}" if declared is not None else "it is missing"
        raise ApiError(
            415,
            f"Content-Type must be application/json ({got}): send the body as JSON",
            expected="application/json",
        )


def nesting_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether JSON `body` nests arrays and objects deeper than `limit` (brackets inside
    strings do not count). Cheap, and safe on any input: it runs before the decoder."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    steps = (
        1 if bracket in (b"[", b"{") else -1
        for bracket in _JSON_NESTING.findall(_JSON_STRING.sub(b"", body))
    )
    return max(accumulate(steps), default=0) > limit


def decode_json(body: bytes) -> Any:
    """`body` as JSON builtins, once it is non-empty, nested at most MAX_JSON_DEPTH deep and
    valid UTF-8 JSON (422 otherwise)."""
    if not body.strip():
        raise ApiError(422, "request body is empty: send a JSON object")
    if nesting_depth_exceeds(body, MAX_JSON_DEPTH):
        raise ApiError(
            422,
            f"request body is nested more than {MAX_JSON_DEPTH} levels deep: flatten it",
            limit=MAX_JSON_DEPTH,
        )
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError(422, f"request body is not valid JSON: {exc}") from exc


def convert_json(raw: Any, type_: type[T], shape: str = "") -> T:
    """Decoded JSON `raw` as `type_` (422 naming the field), once every text in it (keys too)
    is free of control characters and every integer fits in 64 bits."""
    try:
        value: T = msgspec.convert(raw, type_)
    except msgspec.ValidationError as exc:
        raise ApiError(422, f"invalid request body{shape}: {exc}") from exc
    check_values(raw, "$")
    return value


def check_values(raw: Any, where: str) -> None:
    """422 naming the first text holding a control character other than tab, LF and CR (NUL
    among them, which PostgreSQL refuses), or integer outside 64 bits, in decoded JSON."""
    if isinstance(raw, str):
        if (found := _CONTROL.search(raw)) is not None:
            raise ApiError(
                422,
                f"{where} contains the control character U+{ord(found.group()):04X} at "
                f"position {found.start()}: remove it",
                field=where,
            )
    elif isinstance(raw, bool | float) or raw is None:
        return
    elif isinstance(raw, int):
        if not _INT_RANGE[0] <= raw <= _INT_RANGE[1]:
            raise ApiError(422, f"{where} is an integer beyond 64 bits", field=where)
    elif isinstance(raw, list):
        for position, item in enumerate(raw):
            check_values(item, f"{where}[{position}]")
    elif isinstance(raw, dict):
        for key, item in raw.items():
            if _CONTROL.search(key):
                raise ApiError(
                    422,
                    f"a key of {where} contains a control character: {shown(key)}",
                    field=where,
                )
            named = key.isidentifier() and len(key) <= 40
            check_values(item, f"{where}.{key}" if named else f"{where}[{shown(key)}]")
