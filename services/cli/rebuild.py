"""`ragpoc rebuild`: recreate the read models from the event archive (or the Redis streams)."""

from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa
from tqdm import tqdm

from libs.common import Settings
from libs.common.database import create_engine, create_schema
from libs.common.errors import RagpocError
from libs.events import Keys, connect_redis
from libs.events.retention import was_trimmed
from libs.readmodels.rebuild import RebuildReport, drop_read_models, rebuild_from_archive
from libs.readmodels.schema import event_archive
from services.cli.settings import Subparsers, require_database, run_async, settings_for
from services.projector.main import Projector

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "rebuild",
        help="Rebuild the read models from the event archive (or the streams)",
        description=(
            "Drop the read models (tasks, runs, activity) and rebuild them by replaying every "
            "archived event through the projector's own functions. Stop the projector first. "
            "With --from-streams, replay the Redis partition logs instead (and re-archive them)."
        ),
    )
    parser.add_argument(
        "--from-streams", action="store_true", help="replay the Redis streams, not the archive"
    )
    parser.set_defaults(run=run)


class NothingArchived(RagpocError):
    """The event archive holds no event: a rebuild from it would empty the read models."""


class StreamsTrimmed(RagpocError):
    """The partition logs lost entries to trimming: only the archive still has them."""


async def _from_archive(settings: Settings) -> RebuildReport:
    engine = create_engine(settings.sqlalchemy_url)
    try:
        await create_schema(engine)
        async with engine.connect() as conn:
            archived = (
                await conn.execute(sa.select(sa.func.count()).select_from(event_archive))
            ).scalar_one()
        if archived == 0:
            raise NothingArchived(
                "the event archive is empty, nothing was changed; "
                "use --from-streams to replay the Redis streams instead"
            )
        with tqdm(desc="events", unit="ev", file=sys.stderr) as bar:
            return await rebuild_from_archive(engine, progress=bar.update)
    finally:
        await engine.dispose()


async def _from_streams(settings: Settings) -> RebuildReport:
    import time

    engine = create_engine(settings.sqlalchemy_url)
    redis = connect_redis(settings.redis_url, cluster=settings.cluster_mode)
    keys = Keys(settings.namespace, settings.partitions)
    started = time.perf_counter()
    try:
        trimmed = [log for log in keys.partition_logs() if await was_trimmed(redis, log)]
        if trimmed:  # replaying them would drop the archive, the only copy of what went
            raise StreamsTrimmed(
                f"the Redis partition logs were trimmed ({', '.join(trimmed)}), so --from-streams "
                "would replace the archive with less history; nothing was changed. Rebuild from "
                "the archive (without --from-streams) instead"
            )
        await drop_read_models(engine, archive_too=True)
        projector = Projector(redis, engine, keys)
        await projector.start()
        events = await projector.catch_up()
    finally:
        await redis.aclose()
        await engine.dispose()
    return RebuildReport(events, settings.partitions, time.perf_counter() - started)


def run(args: argparse.Namespace) -> int:
    settings = settings_for("rebuild", needs_redis=args.from_streams)  # --from-streams reads Redis
    if settings is None:
        return 2

    async def work() -> int:
        require_database(settings)
        rebuild = _from_streams if args.from_streams else _from_archive
        report = await rebuild(settings)
        print(
            f"rebuilt the read models from {report.events} events in {report.partitions} "
            f"partitions in {report.seconds:.2f} s ({report.events_per_second:,.0f} events/s)"
        )
        return 0

    return run_async("rebuild", settings, work())
