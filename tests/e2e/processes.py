"""Real service processes for end-to-end tests: start `ragpoc <service>` children against a
shared Redis and database, wait until they answer, pause/kill them, and stop them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.eventually import eventually_sync

__all__ = ["Cluster", "stop_all", "wait_healthy"]


@dataclass
class Cluster:
    """A set of service processes sharing one environment (REDIS_URL, DATABASE_URL, …)."""

    env: dict[str, str]
    logs: Path
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @classmethod
    def create(cls, logs: Path, **env: str) -> Cluster:
        base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "OPENAI_BASE_URL")}
        base |= {"RAGPOC_LOG_FORMAT": "json", "RAGPOC_CONSUMER_BLOCK_MS": "200"}
        logs.mkdir(parents=True, exist_ok=True)
        return cls(env=base | env, logs=logs)

    def start(self, service: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{service}-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", service],
            env=self.env | env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append((service, process))
        return process

    def start_http(self, service: str, port_variable: str, count: int = 1) -> list[str]:
        """Start `count` copies on free ports at once; return their URLs once all answer."""
        started = []
        for _ in range(count):
            port = free_port()
            started.append((self.start(service, **{port_variable: str(port)}), port))
        return [wait_healthy(service, p, port, self.log_tail) for p, port in started]

    def stop(self) -> None:
        stop_all([process for _name, process in self.processes])

    def log_tail(self, chars: int = 4000) -> str:
        text = "\n".join(f"== {p.name}\n{p.read_text()[-chars:]}" for p in self.logs.glob("*.log"))
        return text[-chars * 3 :]


def wait_healthy(
    service: str,
    process: subprocess.Popen[bytes],
    port: int,
    log_tail: Callable[[], str],
    path: str = "/health",
) -> str:
    """The service's URL once `path` answers 200 (fails if the process exits first)."""
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{service} exited:\n{log_tail()}")
        try:
            return httpx.get(f"{url}{path}", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    eventually_sync(
        healthy,
        within=60,
        interval=0.1,
        message=lambda: f"{service} did not answer {path}:\n{log_tail()}",
    )
    return url


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGCONT (a paused one cannot stop) and SIGTERM each; SIGKILL what is not gone in 5 s."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
