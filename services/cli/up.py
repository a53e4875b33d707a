"""`ragpoc up`: the whole stack on this machine (see `services.cli.supervisor`)."""

from __future__ import annotations

import argparse
import sys

from libs.common import SettingsError
from libs.common.logging import configure_logging
from libs.common.redact import redact_url
from services.cli.settings import Subparsers, environment_help, settings_for

__all__ = ["add_parser", "run"]

DESCRIPTION = (
    "Start the whole stack on this machine: an embedded Valkey (unless REDIS_URL is set), "
    "mockai (unless OPENAI_BASE_URL is set), projector, ingestor, runner and gateway, each in "
    "its own process. Ctrl-C stops them all. While it runs, other `ragpoc` commands started "
    "with the same RAGPOC_DATA_DIR find its Valkey and gateway by themselves."
)


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "up",
        help="Start the whole stack on this machine",
        description=DESCRIPTION,
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="start a local Valkey Cluster (3 masters, 1 replica each, in <data folder>/"
        "valkey-cluster/) instead of the single embedded Valkey, and give the services "
        "REDIS_URL=<one node> and RAGPOC_REDIS_CLUSTER=1; not with REDIS_URL",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from services.cli.supervisor import run_stack
    from services.gateway.tokens import gateway_tokens

    settings = settings_for("up", needs_redis=False)
    if settings is None:
        return 2
    if args.cluster and settings.redis_url:
        print(
            "ragpoc up: --cluster starts its own Valkey Cluster, but REDIS_URL is set too "
            f"({redact_url(settings.redis_url)}). Unset REDIS_URL, or drop --cluster to use "
            "that server.",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings.log_level, settings.log_format, service="up")
    try:  # the gateway would refuse to start: say so before starting anything
        gateway_tokens(settings)
    except SettingsError as exc:
        print(f"ragpoc up: {exc}", file=sys.stderr)
        return 2
    return run_stack(settings, cluster=args.cluster)
