"""Fixtures for the browser tests: a whole `ragpoc up` stack and a headless Debian Chromium.

Skips (or fails, with RAGPOC_REQUIRE_SERVICES=1) when /usr/bin/chromium or the playwright
package is missing. Screenshots go to RAGPOC_UI_ARTIFACTS (default test-artifacts/ui/)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, unavailable

CHROMIUM = os.environ.get("RAGPOC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ui: drives the web UI in a headless Chromium")


_screenshots: list[Path] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _screenshots:
        terminalreporter.write_line(f"UI screenshots: {_screenshots[0]}")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("RAGPOC_UI_ARTIFACTS", ROOT / "test-artifacts" / "ui")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _screenshots.append(folder)
    return folder


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is open, which would break every asyncio test collected after the UI tests.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)):
        unavailable(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed: pip install playwright")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`ragpoc up` on free ports with its own Valkey and data folder; yields the gateway URL."""
    data = tmp_path_factory.mktemp("ui-stack")
    gateway = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "OPENAI_BASE_URL")}
    env |= {
        "RAGPOC_DATA_DIR": str(data),
        "GATEWAY_PORT": str(gateway),
        "INGESTOR_PORT": str(free_port()),
        "MOCKAI_PORT": str(free_port()),
        "RAGPOC_DEV": "1",
    }
    log_path = data / "up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "rag-poc is up" not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ragpoc up did not start:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        url = f"http://127.0.0.1:{gateway}"
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if os.environ.get("RAGPOC_UI_KEEP_LOGS"):
            shutil.copy(log_path, Path(os.environ["RAGPOC_UI_KEEP_LOGS"]))
