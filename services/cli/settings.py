"""What every `ragpoc` command shares: its settings, loaded the same way, and the running stack.

`ragpoc up` records where its stack listens in `<data folder>/stack.json` while it runs, so a
command started beside it (`ragpoc events 1`, `ragpoc ingest notes/`) finds the embedded Valkey
and the gateway without REDIS_URL or --base-url. An explicit REDIS_URL always wins.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeAlias

import msgspec
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from libs.common import Settings, SettingsError, load_settings
from libs.common.errors import RagpocError
from libs.common.redact import redact, redact_url

__all__ = [
    "STACK_FILE",
    "RunningStack",
    "Subparsers",
    "environment_help",
    "forget_stack",
    "record_stack",
    "require_database",
    "run_async",
    "running_stack",
    "settings_for",
]

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

STACK_FILE = "stack.json"


class RunningStack(msgspec.Struct, frozen=True, kw_only=True):
    """Where a `ragpoc up` stack listens; `pid` is the supervisor's."""

    pid: int
    redis_url: str
    gateway_url: str
    ingestor_url: str


def record_stack(data_dir: Path, stack: RunningStack) -> None:
    """Write the stack file atomically (a reader never sees half of it)."""
    path = data_dir / STACK_FILE
    partial = path.with_suffix(".tmp")
    partial.write_bytes(msgspec.json.encode(stack))
    partial.replace(path)


def forget_stack(data_dir: Path) -> None:
    (data_dir / STACK_FILE).unlink(missing_ok=True)


def running_stack(data_dir: Path) -> RunningStack | None:
    """The stack `ragpoc up` runs from this data folder, if its supervisor is alive."""
    try:
        stack = msgspec.json.decode((data_dir / STACK_FILE).read_bytes(), type=RunningStack)
    except (OSError, msgspec.DecodeError):
        return None
    try:
        os.kill(stack.pid, 0)
    except ProcessLookupError:
        return None  # left behind by a stack that was killed
    except PermissionError:
        pass  # alive, someone else's
    return stack


def settings_for(command: str, *, needs_redis: bool) -> Settings | None:
    """The settings for `ragpoc COMMAND`, or None after saying on stderr what is wrong with the
    environment (the caller exits with 2). Without REDIS_URL, a command that needs Redis uses
    the one of the stack `ragpoc up` runs from the same data folder."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"ragpoc {command}: {exc}", file=sys.stderr)
        return None
    if needs_redis and not settings.redis_url:
        stack = running_stack(settings.data_dir)
        if stack is not None:
            return msgspec.structs.replace(settings, redis_url=stack.redis_url)
        print(
            f"ragpoc {command}: REDIS_URL is not set and no `ragpoc up` stack runs from "
            f"{settings.data_dir.resolve()}. Start one with `ragpoc up`, or point REDIS_URL at "
            "the stack's Redis/Valkey (e.g. redis://127.0.0.1:6379/0).",
            file=sys.stderr,
        )
        return None
    return settings


def environment_help() -> str:
    """Every environment variable rag-poc reads, by the settings struct that reads it."""
    from services.ingestor.settings import IngestSettings
    from services.mockai.settings import MockaiSettings

    return (
        "environment variables (read once at start):\n"
        + Settings.describe()
        + "\ningestor only:\n"
        + IngestSettings.describe()
        + "\nmockai only:\n"
        + MockaiSettings.describe()
    )


class NoDataFolder(RagpocError):
    """The SQLite database's folder does not exist: there is no stack's data here."""


def require_database(settings: Settings) -> None:
    """Refuse, saying why, to work on a SQLite database whose folder does not exist (SQLite
    would fail to open it, and a command must not create a data folder by accident)."""
    url = make_url(settings.sqlalchemy_url)
    if url.get_backend_name() == "sqlite" and url.database:
        folder = Path(url.database).parent
        if not folder.is_dir():
            raise NoDataFolder(
                f"no database at {url.database}: the folder {folder} does not exist. Run it "
                "where `ragpoc up` keeps its data, or set RAGPOC_DATA_DIR or DATABASE_URL"
            )


def run_async(command: str, settings: Settings, work: Coroutine[Any, Any, int]) -> int:
    """Run `ragpoc COMMAND`'s async work and return its exit code. What goes wrong is said on
    stderr in one line: Redis or the database out of reach (1), a refusal of rag-poc's (1, its
    message says what to do). Ctrl-C and a closed stdout (`ragpoc events | head`) end it
    quietly (0)."""
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except aioredis.ConnectionError as exc:
        where = redact_url(settings.redis_url)
        print(
            f"ragpoc {command}: cannot reach Redis at {where}: {redact(str(exc))}", file=sys.stderr
        )
        return 1
    except SQLAlchemyError as exc:
        url = make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)
        reason = getattr(exc, "orig", None) or exc
        print(
            f"ragpoc {command}: the database at {url} failed: {redact(str(reason))}",
            file=sys.stderr,
        )
        return 1
    except RagpocError as exc:
        print(f"ragpoc {command}: {exc}", file=sys.stderr)
        return 1
