#!/usr/bin/env python3
"""The compose stack, for real: up, healthy, the lock smoke test, an e2e run, down, nothing left.

1. `compose up -d` of docker-compose.yml (with --local-images also deploy/compose.local.yml,
   the images `make images` builds), under a project name of its own so a stack you run is
   not touched. The gateway and Prometheus are published on 127.0.0.1 at free ports; the
   services talk over the network compose creates for the project. The gateway gets one
   write token, random for this run (RAGPOC_API_TOKENS=smoke:write:<token>); the two scripts
   below get it as RAGPOC_API_TOKEN, so they go through its authentication.
2. Waits until every container reports healthy. podman runs health checks from systemd
   timers; where PID 1 is not systemd (most CI containers) no timer fires, so this script runs
   each container's check itself (`podman healthcheck run`), as the timers would.
3. Prometheus scrapes every target: the gateway, each runner replica, the projector and the
   ingestor.
4. scripts/run_lock_smoke.py --compose: one run accepted, one refused, and the sentinel files
   inside the `mcp` container show both.
5. scripts/run_e2e_integration.py --mock: a document ingested, a run that retrieves it.
6. `compose down --volumes`, then checks that no container, volume, network or pod of the
   project is left.

The last line printed is the verdict, `PASS: ...` or `FAIL: ...`.

    python scripts/run_compose_smoke.py --local-images          # what `make compose-smoke` runs
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from compose_stack import (
    HealthTicker,
    SmokeError,
    Stack,
    choose_front_end,
    say,
    systemd_runs_health_checks,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
LOCAL_IMAGES_FILE = ROOT / "deploy" / "compose.local.yml"
EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run_compose_smoke.py",
        description=__doc__.split("\n\n    python")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 PASS, 1 FAIL (a check failed), 2 the stack did not come up",
    )
    parser.add_argument(
        "--local-images",
        action="store_true",
        help="use the images `make images` builds (adds deploy/compose.local.yml)",
    )
    parser.add_argument(
        "--compose-command",
        help="the compose front-end, e.g. 'docker compose' (default: docker compose when a "
        "Docker engine answers, else podman-compose)",
    )
    parser.add_argument("--project", help="compose project name (default: ragpoc-smoke-<random>)")
    parser.add_argument(
        "--healthy-timeout",
        type=float,
        default=300,
        help="seconds to wait for every service to be healthy [300]",
    )
    parser.add_argument(
        "--hold-seconds",
        type=float,
        default=3,
        help="TEST_HOLD_SECONDS of the stack: how long each run stays busy, so the smoke "
        "test's second request finds the task taken [3]",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the stack running afterwards (to look at it)"
    )
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_step(name: str, command: list[str], env: dict[str, str]) -> bool:
    say(f"{name}: {shlex.join(command)}")
    done = subprocess.run(command, cwd=ROOT, env=env, text=True, timeout=600, check=False)
    say(f"{name}: exit {done.returncode}")
    return done.returncode == 0


def show_failure(stack: Stack) -> None:
    for container in stack.containers():
        if container["health"] == "healthy":
            continue
        say(
            f"--- last log lines of {container['name']} "
            f"({container['health'] or container['state']})"
        )
        logs = subprocess.run(
            [stack.engine, "logs", "--tail", "30", container["name"]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        print(logs.stdout + logs.stderr, flush=True)


def prometheus_scrapes_every_target(
    prometheus: str, runners: int, timeout: float = 90
) -> str | None:
    """None once Prometheus scrapes every target (each runner replica among them), else why not."""
    deadline = time.monotonic() + timeout
    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(f"{prometheus}/api/v1/targets", timeout=10)
            targets = reply.json()["data"]["activeTargets"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            health = {f"{t['labels']['job']} {t['scrapeUrl']}": t["health"] for t in targets}
            jobs = [t["labels"]["job"] for t in targets]
            problem = f"targets {health}"
            if jobs.count("runner") == runners and all(h == "up" for h in health.values()):
                say(f"prometheus scrapes {len(health)} targets, all up: {sorted(health)}")
                return None
        time.sleep(3)
    return problem


def checks(stack: Stack, args: argparse.Namespace, urls: dict[str, str], token: str) -> list[str]:
    """Brings the stack up and checks it; returns what failed."""
    start = time.monotonic()
    expected = stack.expected_containers()
    say(f"services: {', '.join(f'{name} x{count}' for name, count in sorted(expected.items()))}")
    up = stack.run("up", "-d")
    if up.returncode != 0:
        print(up.stdout[-4000:] + up.stderr[-4000:], flush=True)
        raise SmokeError(f"`compose up -d` exited {up.returncode}")
    containers = wait_healthy(stack, sum(expected.values()), args.healthy_timeout)
    say(f"{len(containers)} containers healthy in {time.monotonic() - start:.0f} s")
    failed = []
    gateway = urls["gateway"]
    scrape_problem = prometheus_scrapes_every_target(urls["prometheus"], expected.get("worker", 0))
    if scrape_problem:
        failed.append(f"prometheus does not scrape every target: {scrape_problem}")
    env = stack.env | {"RAGPOC_API_TOKEN": token}  # in the environment: never printed
    smoke = [
        sys.executable,
        str(ROOT / "scripts" / "run_lock_smoke.py"),
        "--base-url",
        gateway,
        "--compose",
        "--compose-command",
        shlex.join(stack.compose),
    ]
    if not run_step("lock smoke test", smoke, env):
        failed.append("lock smoke test")
    e2e = [sys.executable, str(ROOT / "scripts" / "run_e2e_integration.py"), "--mock"]
    if not run_step("e2e run", [*e2e, "--base-url", gateway], env):
        failed.append("e2e run")
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        front_end = choose_front_end(args.compose_command)
    except SmokeError as exc:
        print(f"FAIL: {exc}", flush=True)
        return EXIT_ERROR
    files = [COMPOSE_FILE] + ([LOCAL_IMAGES_FILE] if args.local_images else [])
    gateway_port, prometheus_port = free_port(), free_port()
    token = secrets.token_urlsafe(24)
    env = dict(os.environ)
    env |= {
        "MCP_PUBLISH": f"127.0.0.1:{gateway_port}",
        "PROMETHEUS_PUBLISH": f"127.0.0.1:{prometheus_port}",
        "TEST_HOLD_SECONDS": str(args.hold_seconds),
        "RAGPOC_API_TOKENS": f"smoke:write:{token}",
    }
    project = args.project or f"ragpoc-smoke-{secrets.token_hex(3)}"
    stack = Stack(front_end, files, project, env)
    gateway = f"http://127.0.0.1:{gateway_port}"
    say(f"project {project} with {shlex.join(stack.compose)}; gateway at {gateway}")
    ticker = None
    if not systemd_runs_health_checks(stack.engine):
        say("PID 1 is not systemd, so podman's health-check timers never fire: running them here")
        ticker = HealthTicker(stack)
        ticker.start()
    failed: list[str] = []
    error = None
    try:
        urls = {"gateway": gateway, "prometheus": f"http://127.0.0.1:{prometheus_port}"}
        failed = checks(stack, args, urls, token)
    except (SmokeError, subprocess.TimeoutExpired) as exc:
        error = str(exc)
        show_failure(stack)
    finally:
        if ticker is not None:
            ticker.stop()
        if args.keep:
            say(
                "--keep: the stack stays up; take it down with: "
                f"{shlex.join(stack.compose)} down --volumes"
            )
            say(f"--keep: its gateway's write token (RAGPOC_API_TOKEN) is {token}")
        else:
            down = stack.run("down", "--volumes")
            if down.returncode != 0:
                failed.append(f"`compose down` exited {down.returncode}")
            left = stack.leftovers()
            if left:
                failed.append(f"left behind after down: {left}")
            else:
                say("down: no container, volume, network or pod of the project is left")
    if error:
        print(f"FAIL: the stack did not come up: {error}", flush=True)
        return EXIT_ERROR
    if failed:
        print(f"FAIL: {'; '.join(failed)}", flush=True)
        return EXIT_FAIL
    ending = "the stack left up (--keep)" if args.keep else "nothing left after down"
    print(
        "PASS: every service healthy and scraped, lock smoke test and e2e run passed "
        f"through the API token, {ending}",
        flush=True,
    )
    return EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
