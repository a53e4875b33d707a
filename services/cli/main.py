"""The `ragpoc` dispatch: every command module registers itself on one parser."""

from __future__ import annotations

import argparse
import sys

from services.cli import events, ingest, parked, rebuild, serve, state, trim, up
from services.cli.settings import environment_help

__all__ = ["build_parser", "main"]

COMMAND_MODULES = (up, serve, ingest, events, state, rebuild, trim, parked)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragpoc",
        description="rag-poc: retrieval-augmented agent runs for persisted tasks, "
        "event-sourced over Redis Streams.",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    code: int = args.run(args)
    return code
