"""`ragpoc gateway|runner|ingestor|projector|mockai`: start one service in this process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from libs.common.logging import configure_logging
from libs.common.settings import Settings, SettingsError
from services.cli.settings import Subparsers, environment_help, settings_for

__all__ = ["SERVICES", "add_parser"]


def _serve_http(app: object, settings: Settings, port: int, host: str) -> None:
    import uvicorn

    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        log_config=None,  # uvicorn logs through the root logger set up by configure_logging
        timeout_graceful_shutdown=5,
    )


# The gateway holds a few objects per SSE client (a connection, its tasks and buffers): with
# thousands connected, each full collection walks them all, and Python's default (one per ten
# younger ones) made pauses of up to 1.3 s land between an event and its delivery (measured by
# bench/bench_sse.py at 3,000 and 10,000 clients). Collecting the oldest generation a hundred
# times less often keeps cycles collected, later.
GATEWAY_GC_THRESHOLDS = (700, 10, 1000)


def _gateway(settings: Settings) -> None:
    import gc

    from services.gateway.app import create_app

    gc.set_threshold(*GATEWAY_GC_THRESHOLDS)
    _serve_http(create_app(settings), settings, settings.gateway_port, settings.host)


def _ingestor(settings: Settings) -> None:
    from services.ingestor.app import create_app

    # internal: no authentication of its own, so loopback unless RAGPOC_INTERNAL_HOST says
    _serve_http(create_app(settings), settings, settings.ingestor_port, settings.internal_host)


def _mockai(settings: Settings) -> None:
    from services.mockai import create_app

    _serve_http(create_app(), settings, settings.mockai_port, settings.internal_host)


def _runner(settings: Settings) -> None:
    from services.runner.main import main as runner_main

    runner_main(settings)


def _projector(settings: Settings) -> None:
    from services.projector.main import main as projector_main

    projector_main(settings)


# name -> (start, needs Redis, description)
SERVICES: dict[str, tuple[Callable[[Settings], None], bool, str]] = {
    "gateway": (_gateway, True, "HTTP API, web UI, Server-Sent Events, /metrics (port 8001)."),
    "runner": (_runner, True, "Execute agent runs from the run-command stream (group 'runners')."),
    "ingestor": (_ingestor, False, "Own the vector collection and serve /search (port 8002)."),
    "projector": (
        _projector,
        True,
        "Fold the event log into the SQL read models. Every RAGPOC_TRIM_INTERVAL_S it also "
        "trims the Redis streams, safely (see `ragpoc trim --help`).",
    ),
    "mockai": (_mockai, False, "OpenAI-compatible mock server (port 1573)."),
}


def add_parser(subparsers: Subparsers) -> None:
    for name, (_start, _needs_redis, description) in SERVICES.items():
        parser = subparsers.add_parser(
            name,
            help=description.split(". ")[0].rstrip("."),
            description=description,
            epilog=environment_help(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    start, needs_redis, _ = SERVICES[args.command]
    settings = settings_for(args.command, needs_redis=needs_redis)
    if settings is None:
        return 2
    configure_logging(settings.log_level, settings.log_format, service=args.command)
    try:
        start(settings)  # a service with settings of its own loads them as it starts
    except SettingsError as exc:
        print(f"ragpoc {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0
