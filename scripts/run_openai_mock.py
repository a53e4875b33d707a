#!/usr/bin/env python3
"""Start mockai, the OpenAI-compatible mock server, on 127.0.0.1:1573 (or --host/--port).

The same server as `ragpoc mockai`: this only turns the flags into its variables (RAGPOC_HOST,
MOCKAI_PORT) and runs it in the foreground until Ctrl-C. It answers POST /v1/chat/completions,
/v1/completions and /v1/embeddings and GET /v1/models, deterministically: a question about the
sky gets "The sky is blue because of Rayleigh scattering.", an answer over retrieved passages
cites them, and an embedding is derived from its text. Its other knobs are the MOCKAI_*
variables (latency profiles, embedding size: `ragpoc mockai --help`). Point a client at it with
OPENAI_BASE_URL=http://127.0.0.1:1573/v1 (any OPENAI_API_KEY).

    python scripts/run_openai_mock.py --port 1573
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run_openai_mock.py",
        description=__doc__.split("\n\n    python")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind [127.0.0.1]")
    parser.add_argument("--port", type=int, default=1573, help="port to listen on [1573]")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["RAGPOC_HOST"] = args.host
    os.environ["MOCKAI_PORT"] = str(args.port)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # run as a file, from any folder
    from services.cli.main import main as ragpoc

    print(f"mockai on http://{args.host}:{args.port}/v1 (Ctrl-C to stop)", flush=True)
    return ragpoc(["mockai"])


if __name__ == "__main__":
    sys.exit(main())
