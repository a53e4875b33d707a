"""`ragpoc`: one command for the whole platform and for each service.

One module per command, each with `add_parser(subparsers)` (which registers the command and its
`run`) and `run(args) -> exit code`; `main` dispatches to them.
"""

from services.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
