"""The nemesis of a fault run: at random moments, one fault at a time, it
- kills (SIGKILL) a service process: `ragpoc up` starts it again, the harness its extras;
- pauses one (SIGSTOP) for up to 6 s, longer than a lock's TTL, then resumes it (SIGCONT);
- cuts every Redis connection (`CLIENT KILL TYPE normal`);
- kills Valkey (SIGKILL) and starts it again on the same port, with its AOF;
- terminates the services' PostgreSQL sessions (`pg_terminate_backend`);
- slows the network to Redis (every chunk delayed), or drops it (connections cut, new ones
  refused) for a few seconds.
Every kind comes up once in each round, in a random order; each fault is recorded with when it
began and when it was healed."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg
import redis

from tests.conftest import DEFAULT_POSTGRES
from tests.faults.stack import ChaosStack
from tests.stackproc import alive

__all__ = ["FAULT_KINDS", "Fault", "Nemesis"]

FAULT_KINDS = (
    "kill",
    "pause",
    "client-kill",
    "valkey-kill",
    "pg-terminate",
    "proxy-delay",
    "proxy-drop",
)
KILL_COOLDOWN_S = 20.0  # per service: `ragpoc up` calls 5 exits within 60 s a crash loop


@dataclass
class Fault:
    kind: str
    target: str
    began: float  # wall clock, as the event log's ids
    healed: float = 0.0


@dataclass
class Nemesis:
    stack: ChaosStack
    rng: random.Random
    gap_s: tuple[float, float] = (1.0, 4.0)
    faults: list[Fault] = field(default_factory=list)
    _killed_at: dict[str, float] = field(default_factory=dict)
    _paused: set[int] = field(default_factory=set)

    def counts(self) -> Counter[str]:
        return Counter(f.kind for f in self.faults)

    async def run(self, stop: asyncio.Event, *, rounds: int | None = None) -> None:
        """Inject faults until `stop` is set (or `rounds` rounds of every kind are done), then
        heal whatever is still broken."""
        try:
            while not stop.is_set() and (rounds is None or rounds > 0):
                rounds = None if rounds is None else rounds - 1
                kinds = list(FAULT_KINDS)
                self.rng.shuffle(kinds)
                for kind in kinds:
                    if stop.is_set():
                        break
                    await self.inject(kind)
                    await asyncio.sleep(self.rng.uniform(*self.gap_s))
        finally:
            await self.heal_all()

    async def inject(self, kind: str) -> None:
        match kind:
            case "kill":
                await self._kill()
            case "pause":
                await self._pause()
            case "client-kill":
                fault = self._begin(kind, "valkey")
                with redis.Redis(port=self.stack.valkey.port) as admin:
                    admin.execute_command("CLIENT", "KILL", "TYPE", "normal")
                fault.healed = time.time()
            case "valkey-kill":
                fault = self._begin(kind, "valkey")
                self.stack.valkey.server._process.kill()
                self.stack.valkey.server._process.wait()
                await asyncio.sleep(self.rng.uniform(0.5, 3.0))
                await asyncio.to_thread(self.stack.valkey.start, keep_data=True)
                fault.healed = time.time()
            case "pg-terminate":
                fault = self._begin(kind, "postgresql")
                await asyncio.to_thread(_terminate_sessions, self.stack.schema)
                fault.healed = time.time()
            case "proxy-delay":
                delay = self.rng.uniform(0.05, 0.4)
                fault = self._begin(kind, f"{delay * 1000:.0f} ms")
                self.stack.proxy.proxy.delay_s = delay
                await asyncio.sleep(self.rng.uniform(2.0, 8.0))
                self.stack.proxy.proxy.delay_s = 0.0
                fault.healed = time.time()
            case "proxy-drop":
                fault = self._begin(kind, "redis link")
                self.stack.proxy.call(self.stack.proxy.proxy.cut)
                await asyncio.sleep(self.rng.uniform(0.5, 4.0))
                self.stack.proxy.call(self.stack.proxy.proxy.restore)
                fault.healed = time.time()
            case _:
                raise ValueError(f"unknown fault kind {kind!r}")

    def _begin(self, kind: str, target: str) -> Fault:
        fault = Fault(kind, target, time.time())
        self.faults.append(fault)
        return fault

    async def _kill(self) -> None:
        now = time.monotonic()
        services = {
            name: pid
            for name, pid in self.stack.services().items()
            if now - self._killed_at.get(name, -KILL_COOLDOWN_S) >= KILL_COOLDOWN_S
        }
        if not services:
            return
        name = self.rng.choice(sorted(services))
        fault = self._begin("kill", name)
        self._killed_at[name] = now
        os.kill(services[name], signal.SIGKILL)
        if name in self.stack.extras:  # the harness is their orchestrator
            self.stack.extras[name].wait()
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            self.stack.start_extra(name)
        fault.healed = time.time()

    async def _pause(self) -> None:
        name, pid = self.rng.choice(sorted(self.stack.services().items()))
        fault = self._begin("pause", name)
        os.kill(pid, signal.SIGSTOP)
        self._paused.add(pid)
        await asyncio.sleep(self.rng.uniform(0.5, 6.0))
        self._resume(pid)
        fault.healed = time.time()

    def _resume(self, pid: int) -> None:
        self._paused.discard(pid)
        if alive(pid):
            os.kill(pid, signal.SIGCONT)

    async def heal_all(self) -> None:
        for pid in list(self._paused):
            self._resume(pid)
        self.stack.proxy.call(self.stack.proxy.proxy.restore)
        if self.stack.valkey.server is None or self.stack.valkey.server._process.poll() is not None:
            await asyncio.to_thread(self.stack.valkey.start, keep_data=True)
        for name, process in self.stack.extras.items():
            if process.poll() is not None:
                self.stack.start_extra(name)


def _terminate_sessions(application_name: str) -> int:
    base = os.environ.get("RAGPOC_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchone()
    return int(row[0]) if row else 0
