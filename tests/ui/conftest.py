"""Fixtures for the browser tests: a whole `ragpoc up` stack and a headless Debian Chromium.

Skips (or fails, with RAGPOC_REQUIRE_SERVICES=1) when /usr/bin/chromium or the playwright
package is missing. Screenshots go to RAGPOC_UI_ARTIFACTS (default test-artifacts/ui/).

One stack serves every browser test module of this package (package scope): each test creates
its own tasks and documents and asserts only on those, so the modules do not disturb each other.
Each test gets a fresh browser context (`page`), which fails the test on a console error."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import unavailable
from tests.stackproc import ragpoc_up
from tests.ui.pages import open_page

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


# Package scope: started once for all the browser test modules here, not once per module.
@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`ragpoc up` on free ports with its own Valkey and data folder; yields the gateway URL."""
    data = tmp_path_factory.mktemp("ui-stack")
    try:
        # mockai paces its tokens as a hosted model does, so an answer streams in several
        # llm.delta events (instantly, the runner would send it whole in one)
        with ragpoc_up(data, {"RAGPOC_DEV": "1", "MOCKAI_TOKENS_PER_S": "100"}) as up:
            assert httpx.get(f"{up.base_url}/health", timeout=5).status_code == 200
            yield up.base_url
    finally:
        if os.environ.get("RAGPOC_UI_KEEP_LOGS"):
            shutil.copy(data / "up.log", Path(os.environ["RAGPOC_UI_KEEP_LOGS"]))


@pytest.fixture
def api(stack: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack, timeout=70) as client:
        yield client


@pytest.fixture
def page(browser: Any, stack: str) -> Iterator[Any]:
    with open_page(browser, stack) as page:
        yield page
