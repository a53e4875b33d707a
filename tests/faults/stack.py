"""The stack a fault run attacks: `ragpoc up` (the stack of `make up`, which restarts a service
that dies) plus a second runner and a second gateway, all on PostgreSQL and on a Valkey of the
run's own that they reach through a `ChaosProxy`. The nemesis can kill, pause and cut each part;
the checker reads the truth from Valkey and PostgreSQL directly, never through the proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.conftest import DEFAULT_POSTGRES, free_port
from tests.e2e.processes import stop_all, wait_healthy
from tests.faults.proxy import ChaosProxy
from tests.integration.faults import OwnValkey
from tests.stackproc import ROOT, UpProcess, children, ragpoc_up

__all__ = ["KNOBS", "ChaosStack", "ProxyThread", "chaos_stack"]

# Short leases and idle times so that a paused runner loses its lease and a dead consumer's
# entries are reclaimed within seconds, and runs that last long enough for faults to land in.
KNOBS = {
    "RAGPOC_LOG_FORMAT": "json",
    "RAGPOC_CONSUMER_BLOCK_MS": "500",
    "RAGPOC_LOCK_TTL_MS": "3000",
    "RAGPOC_CONSUMER_MIN_IDLE_MS": "4500",
    "RAGPOC_CONSUMER_MAX_DELIVERIES": "3",
    "RAGPOC_QUEUE_TIMEOUT_S": "60",
    "RAGPOC_SSE_HEARTBEAT_S": "1",
    "RAGPOC_DURABLE_ACCEPT": "1",
    "RAGPOC_LLM_TIMEOUT_S": "10",
    "RAGPOC_LLM_MAX_RETRIES": "1",
    "TEST_HOLD_SECONDS": "0.5",
}


class ProxyThread:
    """The proxy on an event loop of its own, so it keeps forwarding while the harness blocks
    (starting processes, waiting for them)."""

    def __init__(self, proxy: ChaosProxy) -> None:
        self.proxy = proxy
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="chaos-proxy", daemon=True
        )

    def __enter__(self) -> ProxyThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.__aenter__(), self.loop).result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.__aexit__(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def call(self, action: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(action)


@dataclass
class ChaosStack:
    root: Path
    valkey: OwnValkey
    proxy: ProxyThread
    schema: str  # also the application_name of every service's PostgreSQL session
    database_url: str
    up: UpProcess
    extra_env: dict[str, str]
    gateways: list[str]
    extras: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    extra_ports: dict[str, int] = field(default_factory=dict)

    def services(self) -> dict[str, int]:
        """Every service process: name -> pid (`ragpoc up`'s children, then the extras)."""
        found = {name: pid for pid, name in children(self.up.process.pid).items()}
        found |= {name: p.pid for name, p in self.extras.items() if p.poll() is None}
        return found

    def start_extra(self, name: str) -> None:
        """Start (again) "runner-2" or "gateway-2"."""
        service = name.split("-")[0]
        env = dict(self.extra_env)
        if service == "gateway":
            env["GATEWAY_PORT"] = str(self.extra_ports[name])
        log = (self.root / f"{name}.log").open("ab")
        self.extras[name] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", service],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def stop_extras(self) -> None:
        stop_all(list(self.extras.values()))

    def log_tail(self, chars: int = 3000) -> str:
        logs = [self.up.log, *(self.root / f"{name}.log" for name in self.extras)]
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in logs)


def _postgres(schema: str) -> tuple[str, str]:
    """Create `schema`; the admin URL, and the services' URL (search_path and
    application_name set to it)."""
    base = os.environ.get("RAGPOC_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = base.replace("postgresql://", "postgresql+psycopg://", 1)
    separator = "&" if "?" in url else "?"
    return base, f"{url}{separator}options=-csearch_path%3D{schema}&application_name={schema}"


@contextlib.contextmanager
def chaos_stack(root: Path) -> Iterator[ChaosStack]:
    schema = f"chaos_{uuid.uuid4().hex[:10]}"
    admin_url, database_url = _postgres(schema)
    try:
        with contextlib.ExitStack() as stack:
            valkey = OwnValkey(root)
            valkey.start()
            stack.callback(valkey.stop)
            proxy = stack.enter_context(ProxyThread(ChaosProxy(upstream_port=valkey.port)))
            mockai, ingestor = free_port(), free_port()
            shared = KNOBS | {
                "REDIS_URL": proxy.proxy.url,
                "DATABASE_URL": database_url,
                "MOCKAI_PORT": str(mockai),
                "INGESTOR_PORT": str(ingestor),
            }
            up = stack.enter_context(ragpoc_up(root / "data", shared))
            extra_env = {k: v for k, v in os.environ.items() if k != "OPENAI_BASE_URL"} | shared
            extra_env |= {
                "RAGPOC_DATA_DIR": str(root / "data"),
                "OPENAI_BASE_URL": f"http://127.0.0.1:{mockai}/v1",
                "INGESTOR_URL": f"http://127.0.0.1:{ingestor}",
            }
            chaos = ChaosStack(
                root, valkey, proxy, schema, database_url, up, extra_env, [up.base_url]
            )
            stack.callback(chaos.stop_extras)
            chaos.extra_ports["gateway-2"] = free_port()
            for name in ("runner-2", "gateway-2"):
                chaos.start_extra(name)
            second = wait_healthy(
                "gateway-2",
                chaos.extras["gateway-2"],
                chaos.extra_ports["gateway-2"],
                chaos.log_tail,
            )
            chaos.gateways.append(second)
            yield chaos
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
