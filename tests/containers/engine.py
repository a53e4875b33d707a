"""The one place that finds a container engine for the testcontainers suite.

Order: the engine named by DOCKER_HOST, else /var/run/docker.sock, whichever answers; else
podman, whose Docker-compatible API is started on a socket under /tmp for this process and
stopped (by PID) when it exits. It then sets what testcontainers reads (DOCKER_HOST, the
connection mode, Ryuk off on podman since its reaper image is not there) and picks the images:
the locally built `localhost/ragpoc-*` tags on podman (no registry is needed), the public ones
on a Docker engine; RAGPOC_TEST_VALKEY_IMAGE and RAGPOC_TEST_POSTGRES_IMAGE override both.
When no engine can run, or an image is absent, `EngineUnavailable` says why in one sentence,
which the suite turns into its skip (or failure, with RAGPOC_REQUIRE_SERVICES=1) reason.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import docker
import docker.errors

DOCKER_SOCKET = Path("/var/run/docker.sock")
LOCAL_IMAGES = {"valkey": "localhost/ragpoc-valkey:9", "postgres": "localhost/ragpoc-postgres:15"}
PUBLIC_IMAGES = {"valkey": "valkey/valkey:9.0", "postgres": "postgres:16"}
IMAGE_VARIABLES = {"valkey": "RAGPOC_TEST_VALKEY_IMAGE", "postgres": "RAGPOC_TEST_POSTGRES_IMAGE"}
PING_TIMEOUT_S = 3
SERVICE_START_TIMEOUT_S = 15


class EngineUnavailable(RuntimeError):
    """No engine can run the suite's containers here; the message says why."""


@dataclass(frozen=True)
class Engine:
    """An engine that answered, and the images the suite runs on it."""

    docker_host: str
    kind: Literal["docker", "podman"]
    images: dict[str, str]

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, timeout=60)


def _http_get(url: str, path: str) -> bytes | None:
    """The body of a plain HTTP GET to the engine API at `url`, None unless it answers 200.
    (A probe of its own: docker-py's client leaks its socket when nothing answers.)"""
    try:
        if url.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = url.removeprefix("unix://")
        elif url.startswith(("tcp://", "http://")):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            host, _, port = url.split("://", 1)[1].rstrip("/").rpartition(":")
            address = (host, int(port))
        else:
            return None
        with sock:
            sock.settimeout(PING_TIMEOUT_S)
            sock.connect(address)
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: engine\r\n\r\n".encode())
            response = b"".join(iter(lambda: sock.recv(65536), b""))
    except (OSError, ValueError):
        return None
    head, _, body = response.partition(b"\r\n\r\n")
    return body if head.split(b" ")[1:2] == [b"200"] else None


def _answers(url: str) -> Literal["docker", "podman"] | None:
    """Which engine answers at `url` (None when nothing does)."""
    if _http_get(url, "/_ping") is None:
        return None
    version = _http_get(url, "/version") or b"{}"
    try:
        components = json.loads(version).get("Components") or []
    except ValueError:
        components = []
    names = " ".join(str(part.get("Name", "")) for part in components).lower()
    return "podman" if "podman" in names else "docker"


class _PodmanService:
    """`podman system service` on a private socket, stopped by its PID when Python exits."""

    process: subprocess.Popen[bytes] | None = None
    folder: Path | None = None
    url = ""

    @classmethod
    def start(cls) -> str:
        if cls.process is not None and cls.process.poll() is None:
            return cls.url
        podman = shutil.which("podman")
        if podman is None:
            raise EngineUnavailable(
                "no Docker engine answers (DOCKER_HOST unset or silent, no /var/run/docker.sock)"
                " and podman is not installed: `apt-get install -y podman runc`"
            )
        folder = cls.folder = Path(tempfile.mkdtemp(prefix="ragpoc-podman-", dir="/tmp"))
        cls.url = f"unix://{folder / 'podman.sock'}"
        with (folder / "service.log").open("wb") as log:
            cls.process = subprocess.Popen(
                [podman, "system", "service", "--time=0", cls.url],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(cls.stop)
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if cls.process.poll() is not None:
                break
            if _answers(cls.url) == "podman":
                return cls.url
            time.sleep(0.2)
        tail = (folder / "service.log").read_text(errors="replace")[-400:]
        cls.stop()
        raise EngineUnavailable(f"`podman system service` did not answer at {cls.url}: {tail}")

    @classmethod
    def stop(cls) -> None:
        process, cls.process = cls.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        folder, cls.folder = cls.folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _docker_engine() -> tuple[str, Literal["docker", "podman"]] | None:
    """A DOCKER_HOST or the standard socket that answers, or None."""
    candidates = [os.environ.get("DOCKER_HOST", "")]
    if DOCKER_SOCKET.exists():
        candidates.append(f"unix://{DOCKER_SOCKET}")
    for url in filter(None, candidates):
        kind = _answers(url)
        if kind is not None:
            return url, kind
    return None


def _images(kind: Literal["docker", "podman"]) -> dict[str, str]:
    defaults = LOCAL_IMAGES if kind == "podman" else PUBLIC_IMAGES
    return {
        name: os.environ.get(IMAGE_VARIABLES[name]) or image for name, image in defaults.items()
    }


def _configure_testcontainers(url: str, kind: Literal["docker", "podman"]) -> None:
    """testcontainers reads some variables when it is imported and others on use: set both."""
    os.environ["DOCKER_HOST"] = url
    os.environ["TESTCONTAINERS_CONNECTION_MODE"] = "docker_host"
    if kind == "podman":
        os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
    from testcontainers.core.config import ConnectionMode, testcontainers_config

    testcontainers_config.connection_mode_override = ConnectionMode.docker_host
    if kind == "podman":
        testcontainers_config.ryuk_disabled = True


def _check_images(engine: Engine) -> None:
    """The images must be there: podman has no registry to pull from; a Docker engine pulls
    the absent ones now, so a registry it cannot reach becomes a skip reason, not an error."""
    client = engine.client()
    absent = []
    try:
        for image in engine.images.values():
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                if engine.kind == "podman" or not _pulled(client, image):
                    absent.append(image)
    finally:
        client.close()
    if absent:
        hint = "build them with `make images`" if engine.kind == "podman" else "pull them"
        raise EngineUnavailable(
            f"image(s) {', '.join(absent)} absent from {engine.kind} at {engine.docker_host}:"
            f" {hint} or name others with {' / '.join(IMAGE_VARIABLES.values())}"
        )


def _pulled(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.pull(image)
    except docker.errors.APIError:
        return False
    return True


_found: Engine | None = None


def find_engine() -> Engine:
    """The engine the suite uses, found once per process; `EngineUnavailable` says why not."""
    global _found
    if _found is None:
        answered = _docker_engine()
        url, kind = answered if answered is not None else (_PodmanService.start(), "podman")
        engine = Engine(docker_host=url, kind=kind, images=_images(kind))
        _check_images(engine)
        _configure_testcontainers(url, kind)
        _found = engine
    return _found


def stop_podman_service() -> None:
    """Stops the podman service this process started, if any (it also stops at exit)."""
    _PodmanService.stop()
