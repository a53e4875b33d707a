#!/usr/bin/env python3
"""End-to-end check of a retrieval-augmented run: create a task, ingest a small document, run
the agent with `?wait`, and check that the retrieved text is visible in the response.

    python scripts/run_e2e_integration.py --mock                 # starts its own stack on mockai
    python scripts/run_e2e_integration.py --base-url URL         # against a running gateway

Without --base-url it starts `ragpoc up` itself (free ports, a temporary data folder) and stops
it afterwards. --mock, or no OPENAI_API_KEY in the environment, makes that stack use mockai;
otherwise it uses OPENAI_BASE_URL/OPENAI_API_KEY. That stack runs with one write token (the
--token given, else a random one), so the check goes through the gateway's authentication.

A gateway with API tokens (RAGPOC_API_TOKENS) wants a write token: --token, or the environment
variable RAGPOC_API_TOKEN; it is sent as `Authorization: Bearer`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

DOCUMENT = (
    "Field notes from the Azores. The sky over Ponta Delgada turns a deep cobalt blue after "
    "the Atlantic storms pass, because the washed air scatters short wavelengths most. "
    "Fishermen call this the cobalt hour and say it brings calm seas."
)
MARKER = "cobalt"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run_e2e_integration.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--base-url", help="a running gateway (default: start a stack)")
    parser.add_argument("--mock", action="store_true", help="use mockai even with OPENAI_API_KEY")
    parser.add_argument(
        "--token",
        default=os.environ.get("RAGPOC_API_TOKEN") or None,
        help="a write token of the gateway, sent as `Authorization: Bearer` "
        "[env RAGPOC_API_TOKEN; with no --base-url: the token of the stack started]",
    )
    parser.add_argument("--wait", type=float, default=60, help="seconds to wait for each step")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextmanager
def own_stack(mock: bool, token: str) -> Iterator[str]:
    """`ragpoc up` whose gateway accepts `token` (a write token) and no request without it."""
    port = free_port()
    env = dict(os.environ)
    env.pop("RAGPOC_API_TOKENS_FILE", None)  # the one token below, whatever this shell has
    env.pop("REDIS_URL", None)
    if mock:
        env.pop("OPENAI_BASE_URL", None)
    with tempfile.TemporaryDirectory(prefix="ragpoc-e2e-") as data:
        env |= {
            "RAGPOC_DATA_DIR": data,
            "GATEWAY_PORT": str(port),
            "INGESTOR_PORT": str(free_port()),
            "MOCKAI_PORT": str(free_port()),
            "RAGPOC_LOG_FORMAT": "json",
            "RAGPOC_API_TOKENS": f"e2e:write:{token}",
        }
        log_path = Path(data) / "up.log"
        with log_path.open("wb") as log:
            stack = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "up"], env=env, stdout=log, stderr=log
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                if stack.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the stack did not start:\n{log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            print(f"started a stack at {url} ({'mockai' if mock else 'OpenAI'})")
            yield url
        finally:
            stack.send_signal(signal.SIGINT)
            try:
                stack.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stack.kill()


def check(base_url: str, wait: float, token: str | None) -> list[str]:
    problems: list[str] = []
    headers = auth_headers(token)
    with httpx.Client(base_url=base_url, timeout=wait + 30, headers=headers) as api:
        created = api.post(
            "/api/tasks",
            json={"title": "What colour is the sky over the Azores after a storm?"},
        )
        if created.status_code == 401 and token:
            return ["the gateway refuses the token (--token or RAGPOC_API_TOKEN) as not valid"]
        if created.status_code == 401:
            return ["the gateway wants an API token: pass --token or set RAGPOC_API_TOKEN"]
        if created.status_code == 403:
            return ["the token is a read token: the check needs a write token"]
        created.raise_for_status()
        task = created.json()
        print(f"task {task['id']} created")
        ingested = api.post(
            "/api/ingest",
            params={"wait": wait},
            json={"text": DOCUMENT, "title": "azores-notes", "source": "e2e"},
        )
        print(f"ingest -> {ingested.status_code} {ingested.text[:300]}")
        if ingested.status_code != 200:
            return [f"ingest did not finish within {wait} s: {ingested.status_code}"]
        run = api.post("/run-agents", params={"wait": wait}, json={"id": task["id"]})
        print(f"run -> {run.status_code}")
        if run.status_code != 200:
            return [f"run did not finish within {wait} s: {run.status_code} {run.text[:300]}"]
        body = run.json()
        print(f"answer: {body.get('answer')}")
        sources = body.get("sources", [])
        for source in sources:
            print(f"  source {source['title'] or source['doc_id']} ({source['score']:.3f})")
        if body.get("status") != "done":
            problems.append(f"the run ended as {body.get('status')}: {body.get('error')}")
        if not any(MARKER in source["text"] for source in sources):
            problems.append(f"no retrieved source contains {MARKER!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mock = args.mock or not os.environ.get("OPENAI_API_KEY")
    try:
        if args.base_url:
            problems = check(args.base_url, args.wait, args.token)
        else:
            token = args.token or secrets.token_urlsafe(24)
            with own_stack(mock, token) as url:
                problems = check(url, args.wait, token)
    except (httpx.HTTPError, RuntimeError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        print("OK: the retrieved text is in the run's response")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
