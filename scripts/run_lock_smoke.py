#!/usr/bin/env python3
"""Smoke test of duplicate protection against a running gateway, with its sentinel files.

Creates a task (unless --task-id is given) and sends two near-concurrent POST /run-agents for
it. Both ask for `hold_seconds` (the run stays busy that long, so the other request finds the
task taken): a gateway outside dev mode refuses that with 422 and nothing else happens, and the
pair is sent again without it, relying on TEST_HOLD_SECONDS (or on the run taking longer than
the gap between the requests). Then it checks:

- HTTP: one request accepted (202), the other refused (409);
- the task's lock history (GET /api/tasks/ID/locks) gained one lock.acquired, one lock.conflict;
- with --sentinel-dir DIR or --compose: the sentinel files (written by a gateway started with
  RAGPOC_SENTINEL_DIR) gained at least one LOCK_ACQUIRED and one LOCK_CONFLICT line for the
  task since the script started. --compose reads them inside the gateway's container (service
  `mcp`, folder /tmp) with `docker compose exec`, or podman's compose when that is the engine.

A gateway with API tokens (RAGPOC_API_TOKENS) wants a write token: --token, or the
environment variable RAGPOC_API_TOKEN (better: it stays out of the process list and the shell's
history); it is sent as `Authorization: Bearer`.

The last line printed is the verdict, `PASS: ...` or `FAIL: ...`.

    python scripts/run_lock_smoke.py --base-url http://127.0.0.1:8001 --sentinel-dir /tmp
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
ENTERED, ACQUIRED, CONFLICT = (
    "run_agents_entered.log",
    "run_agents_lock_acquired.log",
    "run_agents_lock_conflict.log",
)
SENTINEL_FILES = (ENTERED, ACQUIRED, CONFLICT)
# compose front-ends, in order of preference: the first that answers `version` is used
COMPOSE_ENGINES: tuple[tuple[str, ...], ...] = (
    ("docker", "compose"),
    ("podman", "compose"),
    ("podman-compose",),
    ("docker-compose",),
)
EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
PROJECTION_WAIT_S = 15.0  # how long a just-created task may take to reach the read models


class SmokeError(Exception):
    """The test could not be carried out (gateway or container unreachable): exit 2."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run_lock_smoke.py",
        description=__doc__.split("\n\n    python")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 PASS, 1 FAIL (a check failed), 2 the gateway or the container "
        "could not be reached",
    )
    parser.add_argument(
        "--base-url", default="http://127.0.0.1:8001", help="the gateway [http://127.0.0.1:8001]"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("RAGPOC_API_TOKEN") or None,
        help="a write token of the gateway, sent as `Authorization: Bearer` "
        "[env RAGPOC_API_TOKEN; none: the gateway runs without tokens]",
    )
    parser.add_argument("--task-id", type=int, help="an existing task (default: create one)")
    parser.add_argument(
        "--hold-seconds",
        type=float,
        default=3.0,
        help="how long the accepted run stays busy, when the gateway runs with RAGPOC_DEV=1 "
        "(0: never ask) [3]",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--sentinel-dir",
        type=Path,
        help="check the sentinel files in this folder (the gateway's RAGPOC_SENTINEL_DIR)",
    )
    where.add_argument(
        "--compose",
        action="store_true",
        help="check the sentinel files inside the compose service's container",
    )
    parser.add_argument(
        "--service", default="mcp", help="with --compose: the gateway's compose service [mcp]"
    )
    parser.add_argument(
        "--container-dir",
        # a folder inside the container, only read through the compose front-end
        default="/tmp",  # nosec B108
        help="with --compose: the service's RAGPOC_SENTINEL_DIR, inside its container [/tmp]",
    )
    parser.add_argument(
        "--compose-command",
        help="with --compose: the compose front-end, e.g. 'podman compose' or "
        "'docker compose -f other.yml' "
        "(default: the first of docker compose, podman compose, podman-compose, docker-compose "
        "that is installed); run from the repository root",
    )
    return parser.parse_args(argv)


def compose_command(explicit: str | None) -> list[str]:
    """The compose front-end to use: `explicit`, else the first installed one that answers."""
    if explicit:
        return shlex.split(explicit)
    for engine in COMPOSE_ENGINES:
        if shutil.which(engine[0]) is None:
            continue
        try:
            probe = subprocess.run(
                [*engine, "version"], cwd=ROOT, capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return list(engine)
    names = ", ".join(" ".join(engine) for engine in COMPOSE_ENGINES)
    raise SmokeError(f"--compose: none of {names} is installed and working")


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def refused_credentials(exc: httpx.HTTPError, token: str | None) -> str | None:
    """What to do about a 401 or 403 of the gateway; None for any other failure."""
    if not isinstance(exc, httpx.HTTPStatusError):
        return None
    if exc.response.status_code == 401 and token:
        return "the gateway refuses the token (--token or RAGPOC_API_TOKEN) as not valid"
    if exc.response.status_code == 401:
        return "the gateway wants an API token: pass --token or set RAGPOC_API_TOKEN"
    if exc.response.status_code == 403:
        return "the token is a read token: the smoke test needs a write token"
    return None


class LocalSentinels:
    """Sentinel files in a folder of this machine."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.where = str(folder)

    def read(self, name: str) -> list[str]:
        try:
            return (self.folder / name).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []


class ComposeSentinels:
    """Sentinel files inside a compose service's container, read with `<compose> exec -T`."""

    def __init__(self, command: list[str], service: str, folder: str) -> None:
        self.command, self.service, self.folder = command, service, folder.rstrip("/") or "/"
        self.where = f"{self.folder} in the {service!r} container ({' '.join(command)})"

    def exec_argv(self, name: str) -> list[str]:
        return [*self.command, "exec", "-T", self.service, "cat", f"{self.folder}/{name}"]

    def read(self, name: str) -> list[str]:
        argv = self.exec_argv(name)
        try:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SmokeError(f"{shlex.join(argv)}: {exc}") from exc
        if done.returncode == 0:
            return done.stdout.decode(errors="replace").splitlines()
        error = done.stderr.decode(errors="replace").strip()
        if "No such file" in error:
            return []  # nothing written there yet
        raise SmokeError(f"{shlex.join(argv)} exited {done.returncode}: {error[-500:]}")


Sentinels = LocalSentinels | ComposeSentinels


def fields_of(line: str) -> tuple[str, dict[str, str]]:
    """`<time> KIND key=value ...` -> (KIND, {key: value})."""
    words = line.split()
    kind = words[1] if len(words) > 1 else ""
    return kind, dict(word.split("=", 1) for word in words[2:] if "=" in word)


def new_lines(before: list[str], after: list[str]) -> list[str]:
    """The lines appended since `before` was read (all of them if the file was replaced)."""
    return after[len(before) :] if after[: len(before)] == before else after


@dataclass
class Outcome:
    task_id: int
    statuses: list[int] = field(default_factory=list)
    conflict_layers: list[str] = field(default_factory=list)
    locks_gained: Counter[str] = field(default_factory=Counter)
    sentinels_gained: Counter[str] = field(default_factory=Counter)
    sentinels_where: str = ""

    def problems(self) -> list[str]:
        found = []
        if sorted(self.statuses) != [202, 409]:
            found.append(f"expected one 202 and one 409, got {sorted(self.statuses)}")
        locks = (self.locks_gained["lock.acquired"], self.locks_gained["lock.conflict"])
        if locks != (1, 1):
            found.append(f"lock history gained {dict(self.locks_gained)}, not one of each")
        if self.sentinels_where:
            missing = [
                k for k in ("LOCK_ACQUIRED", "LOCK_CONFLICT") if not self.sentinels_gained[k]
            ]
            if missing:
                found.append(
                    f"no new {' or '.join(missing)} line for task {self.task_id} in "
                    f"{self.sentinels_where} (is the gateway's RAGPOC_SENTINEL_DIR that folder?)"
                )
        return found

    def verdict(self) -> str:
        problems = self.problems()
        if problems:
            return f"FAIL: task {self.task_id}: " + "; ".join(problems)
        layers = ",".join(self.conflict_layers) or "?"
        text = f"PASS: task {self.task_id}: one run accepted (202), one refused (409 at {layers})"
        if self.sentinels_where:
            gained = self.sentinels_gained
            text += (
                f"; sentinels +{gained['LOCK_ACQUIRED']} LOCK_ACQUIRED, "
                f"+{gained['LOCK_CONFLICT']} LOCK_CONFLICT, +{gained['ENTERED']} ENTERED "
                f"in {self.sentinels_where}"
            )
        return text


async def lock_history(client: httpx.AsyncClient, task_id: int) -> Counter[str]:
    """The task's lock events by type. A task created a moment ago may not be in the read
    models yet (the gateway waits at most 3 s for the projector): its 404 is asked again."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        reply = await client.get(f"/api/tasks/{task_id}/locks", params={"limit": 5000})
        if reply.status_code != 404 or loop.time() - start > PROJECTION_WAIT_S:
            break
        await asyncio.sleep(0.25)
    if loop.time() - start > 0.2:
        print(f"task {task_id} reached the read models {loop.time() - start:.1f} s after asked")
    reply.raise_for_status()
    return Counter(item["type"] for item in reply.json()["locks"])


async def run_pair(client: httpx.AsyncClient, task_id: int, hold: float) -> list[httpx.Response]:
    body: dict[str, object] = {"id": task_id} | ({"hold_seconds": hold} if hold else {})
    return list(await asyncio.gather(*(client.post("/run-agents", json=body) for _ in range(2))))


def refused_hold(replies: list[httpx.Response]) -> bool:
    return all(r.status_code == 422 and "hold_seconds" in r.text for r in replies)


def snapshot(sentinels: Sentinels | None) -> dict[str, list[str]]:
    return {name: sentinels.read(name) for name in SENTINEL_FILES} if sentinels else {}


async def smoke(args: argparse.Namespace, sentinels: Sentinels | None) -> Outcome:
    headers = auth_headers(args.token)
    async with httpx.AsyncClient(base_url=args.base_url, timeout=30, headers=headers) as client:
        task_id = args.task_id
        if task_id is None:
            created = await client.post(
                "/api/tasks", json={"title": "lock smoke", "description": "Why is the sky blue?"}
            )
            created.raise_for_status()
            task_id = int(created.json()["id"])
            print(f"created task {task_id}")
        before = await asyncio.to_thread(snapshot, sentinels)
        locks_before = await lock_history(client, task_id)
        replies = await run_pair(client, task_id, args.hold_seconds)
        if args.hold_seconds and refused_hold(replies):
            print("the gateway refuses hold_seconds (not RAGPOC_DEV=1): sending the pair again")
            print("without it; set TEST_HOLD_SECONDS on the runners for a deterministic conflict")
            replies = await run_pair(client, task_id, 0)
        for reply in replies:
            print(f"POST /run-agents -> {reply.status_code} {reply.text}")
            if reply.status_code in (401, 403):
                reply.raise_for_status()  # the credentials, not the locks: no verdict on them
        outcome = Outcome(task_id, statuses=[r.status_code for r in replies])
        outcome.conflict_layers = [
            str(r.json().get("error", {}).get("layer")) for r in replies if r.status_code == 409
        ]
        outcome.locks_gained = await lock_history(client, task_id) - locks_before
        print(f"lock history gained: {dict(outcome.locks_gained)}")
    if sentinels is not None:
        after = await asyncio.to_thread(snapshot, sentinels)
        outcome.sentinels_where = sentinels.where
        for name in SENTINEL_FILES:
            for line in new_lines(before[name], after[name]):
                kind, values = fields_of(line)
                if values.get("task_id") == str(task_id):
                    outcome.sentinels_gained[kind] += 1
                    print(f"{name}: {line}")
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sentinels: Sentinels | None = None
        if args.sentinel_dir is not None:
            sentinels = LocalSentinels(args.sentinel_dir)
        elif args.compose:
            command = compose_command(args.compose_command)
            sentinels = ComposeSentinels(command, args.service, args.container_dir)
        outcome = asyncio.run(smoke(args, sentinels))
    except SmokeError as exc:
        print(f"FAIL: {exc}")
        return EXIT_ERROR
    except httpx.HTTPError as exc:
        refused = refused_credentials(exc, args.token)
        if refused:
            print(f"FAIL: {args.base_url}: {refused}")
        else:
            print(f"FAIL: cannot talk to the gateway at {args.base_url}: {exc!r}")
        return EXIT_ERROR
    verdict = outcome.verdict()
    print(verdict)
    return EXIT_PASS if verdict.startswith("PASS") else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
