"""A compose project driven from Python: its front-end (docker compose or podman-compose), its
containers and their health, and what of it the engine still holds. Used by
run_compose_smoke.py."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# health checks run by HealthTicker: often while the stack starts, then at compose's interval
START_CHECK_INTERVAL_S = 2.0
STEADY_CHECK_INTERVAL_S = 10.0


class SmokeError(Exception):
    """The stack could not be brought up or checked."""


def say(message: str) -> None:
    print(f"compose-smoke: {message}", flush=True)


def answers(command: Sequence[str]) -> bool:
    if shutil.which(command[0]) is None:
        return False
    try:
        probe = subprocess.run(command, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def choose_front_end(explicit: str | None) -> list[str]:
    if explicit:
        return shlex.split(explicit)
    if answers(["docker", "info"]) and answers(["docker", "compose", "version"]):
        return ["docker", "compose"]
    beside_python = Path(sys.executable).parent / "podman-compose"
    if beside_python.exists() and answers(["podman", "version"]):
        return [str(beside_python)]
    if answers(["podman-compose", "version"]):
        return ["podman-compose"]
    raise SmokeError(
        "no compose front-end: neither a Docker engine with `docker compose` nor podman with "
        "podman-compose answers (`make install` installs podman-compose, `make images` podman)"
    )


@dataclass
class Stack:
    """One compose project: the command that drives it and the engine beneath it."""

    front_end: list[str]
    files: list[Path]
    project: str
    env: dict[str, str]
    engine: str = field(init=False)
    label: str = field(init=False)

    def __post_init__(self) -> None:
        docker = self.front_end[0] == "docker" or self.front_end[0].endswith("docker-compose")
        self.engine = "docker" if docker else "podman"
        self.label = f"com.docker.compose.project={self.project}"
        if self.engine == "podman":
            self.label = f"io.podman.compose.project={self.project}"

    @property
    def compose(self) -> list[str]:
        files = [arg for path in self.files for arg in ("-f", str(path))]
        return [*self.front_end, "-p", self.project, *files]

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.compose, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def expected_containers(self) -> dict[str, int]:
        """Each service of the merged configuration and how many containers it runs."""
        done = self.run("config")
        if done.returncode != 0:
            raise SmokeError(f"`compose config` exited {done.returncode}: {done.stderr[-2000:]}")
        services = yaml.safe_load(done.stdout)["services"]
        return {
            name: int((service.get("deploy") or {}).get("replicas", 1))
            for name, service in services.items()
        }

    def engine_lines(self, *args: str) -> list[str]:
        done = subprocess.run(
            [self.engine, *args], capture_output=True, text=True, timeout=60, check=False
        )
        return [line for line in done.stdout.splitlines() if line.strip()]

    def containers(self) -> list[dict[str, str]]:
        """Name, state and health of each container of the project."""
        ids = self.engine_lines("ps", "-a", "--filter", f"label={self.label}", "-q")
        if not ids:
            return []
        done = subprocess.run(
            [self.engine, "inspect", *ids], capture_output=True, text=True, timeout=60, check=False
        )
        found = []
        for item in json.loads(done.stdout or "[]"):
            state = item.get("State", {})
            health = state.get("Health") or state.get("Healthcheck") or {}
            name = item.get("Name", "").lstrip("/")
            found.append(
                {
                    "name": name,
                    "state": state.get("Status", "?"),
                    "health": health.get("Status", ""),
                }
            )
        return found

    def leftovers(self) -> dict[str, list[str]]:
        """What of the project the engine still holds."""
        label = f"label={self.label}"
        left = {
            "containers": self.engine_lines("ps", "-a", "--filter", label, "-q"),
            "volumes": self.engine_lines("volume", "ls", "--filter", label, "-q"),
            "networks": self.engine_lines("network", "ls", "--filter", label, "-q"),
        }
        if self.engine == "podman":
            pods = self.engine_lines("pod", "ls", "--format", "{{.Name}}")
            left["pods"] = [pod for pod in pods if pod == f"pod_{self.project}"]
        return {kind: names for kind, names in left.items() if names}


def systemd_runs_health_checks(engine: str) -> bool:
    if engine != "podman":
        return True  # dockerd schedules health checks itself
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:
        return False


class HealthTicker(threading.Thread):
    """Runs `podman healthcheck run` for every running container of the stack, as podman's
    systemd timers would: every START_CHECK_INTERVAL_S until healthy, then less often."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(name="health-ticker", daemon=True)
        self.stack = stack
        self.stopping = threading.Event()
        self.last_run: dict[str, float] = {}

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            now = time.monotonic()
            for container in self.stack.containers():
                if container["state"] != "running" or not container["health"]:
                    continue
                interval = START_CHECK_INTERVAL_S
                if container["health"] == "healthy":
                    interval = STEADY_CHECK_INTERVAL_S
                if now - self.last_run.get(container["name"], 0.0) < interval:
                    continue
                self.last_run[container["name"]] = now
                subprocess.run(
                    ["podman", "healthcheck", "run", container["name"]],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=70)


def wait_healthy(stack: Stack, expected: int, timeout: float) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        containers = stack.containers()
        waiting = [c for c in containers if c["state"] != "running" or c["health"] != "healthy"]
        summary = ", ".join(f"{c['name']}={c['health'] or c['state']}" for c in waiting)
        if len(containers) < expected:
            summary = f"{expected - len(containers)} containers not created yet; {summary}"
        if len(containers) >= expected and not waiting:
            return containers
        if summary != shown:
            say(f"waiting for: {summary or 'containers to be created'}")
            shown = summary
        if time.monotonic() > deadline:
            raise SmokeError(f"not healthy after {timeout:.0f} s: {summary}")
        time.sleep(2)
