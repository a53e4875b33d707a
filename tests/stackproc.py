"""`ragpoc up` as a child process, for the tests that need the real thing (e2e, UI): on free
ports, with its own data folder, stopped with Ctrl-C as a user would, whatever happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port
from tests.eventually import eventually_sync

__all__ = ["UpProcess", "alive", "children", "ragpoc_up"]

ROOT = Path(__file__).resolve().parents[1]


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


def children(pid: int) -> dict[int, str]:
    """The direct children of `pid`: pid -> what it is ("runner", ..., "valkey")."""
    try:
        pids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return {}
    found = {}
    for child in map(int, pids):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
        except FileNotFoundError:
            continue
        if len(argv) >= 2:  # not a zombie (its command line is gone)
            found[child] = "valkey" if "valkey-server" in argv[0] else argv[-2]
    return found


@dataclass
class UpProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def stop(self, timeout: float = 20) -> int:
        """Ctrl-C; if the stack is not down in time, SIGKILL its whole process group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@contextmanager
def ragpoc_up(
    data_dir: Path, env: dict[str, str], startup_s: float = 60, args: Sequence[str] = ()
) -> Iterator[UpProcess]:
    """Start `ragpoc up [args]` (with `env` over this process's environment, minus REDIS_URL
    and OPENAI_BASE_URL unless `env` sets them), wait for "rag-poc is up", stop it on exit."""
    gateway = free_port()
    child_env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "OPENAI_BASE_URL")}
    child_env |= {
        "RAGPOC_DATA_DIR": str(data_dir),
        "GATEWAY_PORT": str(gateway),
        "INGESTOR_PORT": str(free_port()),
        "MOCKAI_PORT": str(free_port()),
        **env,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", *args],
            cwd=ROOT,
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the SIGKILL fallback reaches all
        )
    up = UpProcess(process, f"http://127.0.0.1:{gateway}", log)

    def is_up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"ragpoc up exited early:\n{log.read_text()[-4000:]}")
        return "rag-poc is up" in log.read_text(errors="replace")  # once every service answers

    try:
        eventually_sync(
            is_up,
            within=startup_s,
            interval=0.2,
            message=lambda: f"ragpoc up not up:\n{log.read_text()[-4000:]}",
        )
        yield up
    finally:
        up.stop()
