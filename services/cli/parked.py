"""`ragpoc parked`: the partition-log entries the projector set aside (an entry that is not a
known event, or an event the database refused), and their replay once the cause is fixed."""

from __future__ import annotations

import argparse
import json

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.database import create_engine, create_schema
from libs.readmodels.queries import list_parked
from libs.readmodels.replay import replay_parked
from services.cli.render import iso, task_id
from services.cli.settings import Subparsers, require_database, run_async, settings_for

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "parked",
        help="List (or --replay) the entries the projector set aside",
        description=(
            "One bad entry never stops the projector: an entry that is not a known event, or\n"
            "an event the database refuses, is parked with its raw fields and the reason, and\n"
            "projection goes on. This lists them, newest first. After fixing the cause (a\n"
            "schema, a constraint, a newer version that knows the event), --replay re-applies\n"
            "them: each is archived at its place in the log and its task is refolded, giving\n"
            "the rows a rebuild would give. Exits with 1 if any entry stays parked."
        ),
        epilog=(
            "examples:\n"
            "  ragpoc parked\n"
            "  ragpoc parked --task 42 --json\n"
            "  ragpoc parked --replay\n"
            "  ragpoc parked --replay --partition 3 --entry 1764244800123-0\n"
            "\nIt reads DATABASE_URL (or the SQLite file in RAGPOC_DATA_DIR); no Redis."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", type=task_id, metavar="N", help="only the entries of task N")
    parser.add_argument("--partition", type=int, metavar="P", help="only partition P's entries")
    parser.add_argument(
        "--entry", action="append", metavar="LOG_ID", help="only this log entry (repeatable)"
    )
    parser.add_argument("--replay", action="store_true", help="re-apply them now")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_for("parked", needs_redis=False)
    if settings is None:
        return 2

    async def work() -> int:
        require_database(settings)
        engine = create_engine(settings.sqlalchemy_url)
        try:
            await create_schema(engine)
            if args.replay:
                return await _replay(engine, args)
            return await _list(engine, args)
        finally:
            await engine.dispose()

    return run_async("parked", settings, work())


async def _list(engine: AsyncEngine, args: argparse.Namespace) -> int:
    parked = await list_parked(engine, task_id=args.task)
    shown = [
        entry
        for entry in parked
        if (args.partition is None or entry.partition == args.partition)
        and (not args.entry or entry.log_id in args.entry)
    ]
    for entry in shown:
        if args.json:
            print(json.dumps(msgspec.to_builtins(entry), ensure_ascii=False))
        else:
            task = "-" if entry.task_id is None else str(entry.task_id)
            print(
                f"p{entry.partition:<3} {entry.log_id:<22} task {task:<6} {entry.type or '?':<15} "
                f"parked {iso(entry.parked_at)}  {entry.reason}"
            )
    if not args.json:
        print(f"{len(shown)} parked entries")
    return 0


async def _replay(engine: AsyncEngine, args: argparse.Namespace) -> int:
    outcomes = await replay_parked(
        engine,
        partition=args.partition,
        log_ids=args.entry,
        task_id=args.task,
    )
    for outcome in outcomes:
        if args.json:
            print(json.dumps(msgspec.to_builtins(outcome), ensure_ascii=False))
        else:
            verdict = "replayed" if outcome.replayed else f"still parked: {outcome.reason}"
            print(
                f"p{outcome.partition:<3} {outcome.log_id:<22} {outcome.type or '?':<15} {verdict}"
            )
    stuck = sum(not outcome.replayed for outcome in outcomes)
    if not args.json:
        print(f"{len(outcomes) - stuck} replayed, {stuck} still parked")
    return 1 if stuck else 0
