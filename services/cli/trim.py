"""`ragpoc trim`: one retention pass over the Redis streams now (what the projector does every
RAGPOC_TRIM_INTERVAL_S), printing per stream what it trimmed, or with --dry-run would trim."""

from __future__ import annotations

import argparse

from libs.common import Settings
from libs.common.database import create_engine, create_schema
from libs.events import Keys, connect_redis
from libs.events.retention import StreamTrim, Trimmer, TrimReport
from libs.readmodels.archive import SqlArchive
from services.cli.settings import Subparsers, require_database, run_async, settings_for

__all__ = ["add_parser", "render_report", "run"]

_WHY_KEPT = {
    "partition": "nothing projected (archived) yet",
    "task": "nothing archived yet",
    "commands": "no consumer group yet, or nothing delivered and acknowledged",
    "docs": "retention covers everything",
}


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "trim",
        help="Trim the Redis streams once, safely, or --dry-run",
        description=(
            "Trim the Redis streams once, as the projector does every RAGPOC_TRIM_INTERVAL_S,\n"
            "and print per stream what was trimmed. Entries older than\n"
            "RAGPOC_STREAM_RETENTION_S go, but never what is unsafe to forget: a partition log\n"
            "keeps what the projector has not archived in SQL yet, a task stream its\n"
            "unarchived events, a command stream every pending entry and what no consumer\n"
            "group has been given yet. The docs stream is trimmed by age only; dead-letter\n"
            "streams are never trimmed. Trimmed history stays readable from the SQL archive\n"
            "(SSE, lock history, `ragpoc events`). Always XTRIM MINID, never MAXLEN or DEL.\n"
            "Task streams are only listed when something is trimmed from them."
        ),
        epilog=(
            "examples:\n"
            "  ragpoc trim --dry-run\n"
            "  RAGPOC_STREAM_RETENTION_S=3600 ragpoc trim\n"
            "\nIt needs REDIS_URL, and DATABASE_URL unless the read models are the SQLite\n"
            "file in RAGPOC_DATA_DIR."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be trimmed; change nothing"
    )
    parser.set_defaults(run=run)


def _line(trim: StreamTrim, dry_run: bool) -> str:
    verb = "would trim" if dry_run else "trimmed"
    if trim.bound is None:
        return f"{'kept':<10} {'-':>6}  {trim.stream}  ({_WHY_KEPT[trim.kind]})"
    emptied = ", now empty" if trim.emptied else ""
    return f"{verb:<10} {trim.removed:>6}  {trim.stream}  (below {trim.bound}{emptied})"


def render_report(report: TrimReport) -> list[str]:
    """One line per stream (task streams only when something goes from them), then totals."""
    lines = [
        _line(trim, report.dry_run)
        for trim in report.streams
        if trim.kind != "task" or trim.removed > 0
    ]
    counts = report.counts()
    total = sum(trim.removed for trim in report.streams)
    verb = "would trim" if report.dry_run else "trimmed"
    lines.append(
        f"{verb} {total} entries (age cutoff {report.cutoff}): "
        f"{counts['partition_entries']} from partition logs, {counts['task_entries']} from "
        f"{counts['tasks_visited']} task streams visited ({counts['task_streams_emptied']} "
        f"emptied), {counts['command_entries']} from command streams, "
        f"{counts['doc_entries']} from the docs stream"
    )
    return lines


async def trim_once(settings: Settings, *, dry_run: bool) -> TrimReport:
    redis = connect_redis(settings.redis_url, max_connections=4, cluster=settings.cluster_mode)
    engine = create_engine(settings.sqlalchemy_url)
    try:
        await create_schema(engine)
        keys = Keys(settings.namespace, settings.partitions)
        trimmer = Trimmer(redis, keys, SqlArchive(engine), settings.stream_retention_s)
        return await trimmer.run_once(dry_run=dry_run)
    finally:
        await redis.aclose()
        await engine.dispose()


def run(args: argparse.Namespace) -> int:
    settings = settings_for("trim", needs_redis=True)
    if settings is None:
        return 2

    async def work() -> int:
        require_database(settings)
        print("\n".join(render_report(await trim_once(settings, dry_run=args.dry_run))))
        return 0

    return run_async("trim", settings, work())
