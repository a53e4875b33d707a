"""Sentinel files: what `POST /run-agents` did, as plain lines an operator can read from
outside the process (`cat`, `docker compose exec`), without Redis or the database.

With RAGPOC_SENTINEL_DIR set, the gateway appends to three files in that folder:

- `run_agents_entered.log`: `<time> ENTERED task_id=N ...`, for each request whose body decoded;
- `run_agents_lock_acquired.log`: `<time> LOCK_ACQUIRED task_id=N run_id=R fence=F
  method=... token_len=L ...`, for each admitted run;
- `run_agents_lock_conflict.log`: `<time> LOCK_CONFLICT task_id=N run_id=R layer=precheck|lock|db
  holder=R2 ...`, for each refusal, naming the layer that refused.

Every line ends with `pid=` and `host=`, so the gateway process that wrote it is known when
several share the folder. Unset: nothing is written, and each call returns at once.

A line is one `os.write` of fewer than PIPE_BUF bytes to a file opened with O_APPEND: the kernel
puts it whole at the end of the file, so lines of several processes never tear or interleave.
The file is opened for each line, so a file an operator deletes or rotates is simply created
again (a descriptor kept open would go on writing into the deleted file). The write is made in
the request, synchronously: it takes microseconds on a local disk, and the line is on file
before the response is sent, so whoever got the response finds its line. A write that fails is
logged once per file and ignored: a sentinel never fails, or delays, a request beyond that.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import structlog

from libs.commandside.locks import Lease
from libs.events.lock import ConflictLayer

__all__ = [
    "ENTERED_FILE",
    "LINE_MAX_BYTES",
    "LOCK_ACQUIRED_FILE",
    "LOCK_CONFLICT_FILE",
    "entered",
    "format_line",
    "lock_acquired",
    "lock_conflict",
]

log = structlog.get_logger(__name__)

ENTERED_FILE = "run_agents_entered.log"
LOCK_ACQUIRED_FILE = "run_agents_lock_acquired.log"
LOCK_CONFLICT_FILE = "run_agents_lock_conflict.log"

# POSIX guarantees PIPE_BUF >= 512 (Linux: 4096); a line never exceeds this, newline included.
LINE_MAX_BYTES = 512

# How the gateway takes a task: SET NX PX of a token with a fence from INCR, then the claim row.
GATEWAY_METHOD = "redis_set_nx_px+db_claim"

_HOST = socket.gethostname() or "-"
_warned: set[Path] = set()  # files whose write failed once (logged), per process
_warned_lock = threading.Lock()


def entered(folder: Path | None, task_id: int) -> None:
    """A `POST /run-agents` handler was entered for `task_id` (its body decoded)."""
    if folder is not None:
        _append(folder / ENTERED_FILE, "ENTERED", task_id=task_id)


def lock_acquired(folder: Path | None, lease: Lease, method: str = GATEWAY_METHOD) -> None:
    """The run holds the task's lock and its claim; `token_len` is the fenced token's length
    (the token itself is a credential of the run and is not written)."""
    if folder is not None:
        _append(
            folder / LOCK_ACQUIRED_FILE,
            "LOCK_ACQUIRED",
            task_id=lease.task_id,
            run_id=lease.run_id,
            fence=lease.fence,
            method=method,
            token_len=len(lease.token),
            ttl_ms=lease.ttl_ms,
        )


def lock_conflict(
    folder: Path | None,
    task_id: int,
    run_id: str,
    layer: ConflictLayer,
    holder_run_id: str,
    expires_at: float | None,
) -> None:
    """The run was refused at `layer` (precheck, lock or db) because `holder_run_id` has it."""
    if folder is not None:
        _append(
            folder / LOCK_CONFLICT_FILE,
            "LOCK_CONFLICT",
            task_id=task_id,
            run_id=run_id,
            layer=layer,
            holder=holder_run_id or "-",
            expires_at=_iso(expires_at) if expires_at is not None else "-",
        )


def format_line(kind: str, at: float, **fields: object) -> bytes:
    """`<ISO time> KIND key=value ... pid=P host=H\\n`, whitespace in values replaced by `_`,
    cut to LINE_MAX_BYTES (the newline kept) so one write of it stays atomic."""
    pairs = {**fields, "pid": os.getpid(), "host": _HOST}
    words = [_iso(at), kind, *(f"{key}={_word(value)}" for key, value in pairs.items())]
    line = " ".join(words).encode("utf-8", errors="replace")
    return line[: LINE_MAX_BYTES - 1] + b"\n"


def _append(path: Path, kind: str, **fields: object) -> None:
    line = format_line(kind, time.time(), **fields)
    try:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)  # the folder is created on first use
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            written = os.write(fd, line)
        finally:
            os.close(fd)
        if written != len(line):
            raise OSError(f"short write: {written} of {len(line)} bytes")
    except OSError as exc:
        with _warned_lock:
            first = path not in _warned
            _warned.add(path)
        if first:
            log.warning(
                "gateway.sentinel_write_failed",
                path=str(path),
                error=repr(exc),
                note="sentinel lines are skipped; later failures of this file are not logged",
            )


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")


def _word(value: object) -> str:
    text = str(value)
    return "".join("_" if ch.isspace() else ch for ch in text) or "-"
