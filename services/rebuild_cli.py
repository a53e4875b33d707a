"""`ragpoc rebuild`: recreate the read models from the event archive (or the Redis streams)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import sqlalchemy as sa
from tqdm import tqdm

from libs.common import Settings
from libs.events import Keys, connect_redis
from libs.events.retention import was_trimmed
from libs.readmodels import create_engine, create_schema
from libs.readmodels.rebuild import RebuildReport, drop_read_models, rebuild_from_archive
from libs.readmodels.schema import event_archive
from services.cli_settings import settings_for
from services.projector.main import Projector

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragpoc rebuild",
        description=(
            "Drop the read models (tasks, runs, activity) and rebuild them by replaying every "
            "archived event through the projector's own functions. Stop the projector first. "
            "With --from-streams, replay the Redis partition logs instead (and re-archive them)."
        ),
    )
    parser.add_argument(
        "--from-streams", action="store_true", help="replay the Redis streams, not the archive"
    )
    return parser


class NothingArchived(Exception):
    pass


class StreamsTrimmed(Exception):
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
            raise NothingArchived
        with tqdm(desc="events", unit="ev", file=sys.stderr) as bar:
            return await rebuild_from_archive(engine, progress=bar.update)
    finally:
        await engine.dispose()


async def _from_streams(settings: Settings) -> RebuildReport:
    import time

    engine = create_engine(settings.sqlalchemy_url)
    redis = connect_redis(settings.redis_url)
    keys = Keys(settings.namespace, settings.partitions)
    started = time.perf_counter()
    try:
        trimmed = [log for log in keys.partition_logs() if await was_trimmed(redis, log)]
        if trimmed:  # replaying them would drop the archive, the only copy of what went
            raise StreamsTrimmed(", ".join(trimmed))
        await drop_read_models(engine, archive_too=True)
        projector = Projector(redis, engine, keys)
        await projector.start()
        events = await projector.catch_up()
    finally:
        await redis.aclose()
        await engine.dispose()
    return RebuildReport(events, settings.partitions, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_for("rebuild", needs_redis=args.from_streams)  # --from-streams reads Redis
    if settings is None:
        return 2
    try:
        report = asyncio.run(
            _from_streams(settings) if args.from_streams else _from_archive(settings)
        )
    except NothingArchived:
        print(
            "ragpoc rebuild: the event archive is empty, nothing was changed; "
            "use --from-streams to replay the Redis streams instead",
            file=sys.stderr,
        )
        return 1
    except StreamsTrimmed as exc:
        print(
            f"ragpoc rebuild: the Redis partition logs were trimmed ({exc}), so --from-streams "
            "would replace the archive with less history; nothing was changed. Rebuild from "
            "the archive (without --from-streams) instead",
            file=sys.stderr,
        )
        return 1
    print(
        f"rebuilt the read models from {report.events} events in {report.partitions} partitions "
        f"in {report.seconds:.2f} s ({report.events_per_second:,.0f} events/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
