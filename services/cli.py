"""`ragpoc`: one command for the whole platform and for each service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from libs.common import Settings
from libs.common.logging import configure_logging
from libs.common.settings import describe_environment
from services.cli_settings import settings_for

__all__ = ["main"]


def _serve_http(app_name: str, settings: Settings) -> None:
    import uvicorn
    from starlette.applications import Starlette

    from services.gateway.app import create_app as gateway_app
    from services.ingestor.app import create_app as ingestor_app
    from services.mockai import create_app as mockai_app

    apps: dict[str, tuple[Callable[[], Starlette], int]] = {
        "gateway": (lambda: gateway_app(settings), settings.gateway_port),
        "ingestor": (lambda: ingestor_app(settings), settings.ingestor_port),
        "mockai": (mockai_app, settings.mockai_port),
    }
    factory, port = apps[app_name]
    uvicorn.run(
        factory(),
        host=settings.host,
        port=port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        log_config=None,  # uvicorn logs through the root logger set up by configure_logging
        timeout_graceful_shutdown=5,
    )


def _up(settings: Settings) -> int:
    from services.supervisor import run_stack

    return run_stack(settings)


def _runner(settings: Settings) -> int:
    from services.runner.main import main as runner_main

    runner_main(settings)
    return 0


def _projector(settings: Settings) -> int:
    from services.projector.main import main as projector_main

    projector_main(settings)
    return 0


def _http(name: str) -> Callable[[Settings], int]:
    def run(settings: Settings) -> int:
        _serve_http(name, settings)
        return 0

    return run


COMMANDS: dict[str, tuple[Callable[[Settings], int], str]] = {
    "up": (
        _up,
        "Start the whole stack on this machine: an embedded Valkey (unless REDIS_URL is set), "
        "mockai (unless OPENAI_BASE_URL is set), projector, ingestor, runner and gateway, each "
        "in its own process. Ctrl-C stops them all.",
    ),
    "gateway": (_http("gateway"), "HTTP API, web UI, Server-Sent Events, /metrics (port 8001)."),
    "runner": (_runner, "Execute agent runs from the run-command stream (group 'runners')."),
    "ingestor": (_http("ingestor"), "Own the vector collection and serve /search (port 8002)."),
    "projector": (
        _projector,
        "Fold the event log into the SQL read models. Every RAGPOC_TRIM_INTERVAL_S it also "
        "trims the Redis streams, safely (see `ragpoc trim --help`).",
    ),
    "mockai": (_http("mockai"), "OpenAI-compatible mock server (port 1573)."),
}


NEEDS_REDIS = ("gateway", "runner", "projector")


def build_parser() -> argparse.ArgumentParser:
    from services.ingestor.options import INGEST_ENVIRONMENT

    ingest_lines = "\n".join(
        f"  {variable:<32} {meaning}" for variable, (_f, meaning) in INGEST_ENVIRONMENT.items()
    )
    epilog = (
        "environment variables (read once at start):\n"
        + describe_environment()
        + "\ningestor only:\n"
        + ingest_lines
    )
    parser = argparse.ArgumentParser(
        prog="ragpoc",
        description="rag-poc: retrieval-augmented agent runs for persisted tasks, "
        "event-sourced over Redis Streams.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser(
        "events",
        help="Print or follow a task's event log, or every task's (see `ragpoc events --help`)",
        add_help=False,
    )
    sub.add_parser(
        "state",
        help="A task as the projection saw it at an entry id or time (`ragpoc state --help`)",
        add_help=False,
    )
    sub.add_parser(
        "rebuild",
        help="Rebuild the read models from the event archive (see `ragpoc rebuild --help`)",
        add_help=False,
    )
    sub.add_parser(
        "ingest",
        help="Ingest .txt/.md files or folders through the gateway (see `ragpoc ingest --help`)",
        add_help=False,
    )
    sub.add_parser(
        "trim",
        help="Trim the Redis streams once, safely, or --dry-run (see `ragpoc trim --help`)",
        add_help=False,
    )
    for name, (_run, description) in COMMANDS.items():
        sub.add_parser(
            name,
            help=description.split(". ")[0].split(":")[0],
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ingest"]:  # a client of the gateway, with its own options
        from services.ingest_cli import main as ingest_main

        return ingest_main(argv[1:])
    if argv[:1] in (["events"], ["state"]):
        from services.replay_cli import main as replay_main

        return replay_main(argv)
    if argv[:1] == ["rebuild"]:
        from services.rebuild_cli import main as rebuild_main

        return rebuild_main(argv[1:])
    if argv[:1] == ["trim"]:
        from services.trim_cli import main as trim_main

        return trim_main(argv[1:])
    args = build_parser().parse_args(argv)
    settings = settings_for(args.command, needs_redis=args.command in NEEDS_REDIS)
    if settings is None:
        return 2
    configure_logging(settings.log_level, settings.log_format, service=args.command)
    run, _ = COMMANDS[args.command]
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
