"""What the browser tests of the web UI share: the strict Content-Security-Policy every page is
served with, the console watcher that fails a test on a browser error, a browser page with both
(`open_page`), screenshots, and a task created through the API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

TIMEOUT_MS = 20_000
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class Console:
    """Collects console errors and uncaught exceptions. Chromium logs every non-2xx response as a
    console error ("Failed to load resource"); a test that provokes one on purpose lists it in
    `expected` as (status, path)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.expected: set[tuple[int, str]] = set()

    def on_console(self, message: Any) -> None:
        if message.type == "error":
            url = str(message.location.get("url", ""))
            for status, path in self.expected:
                if f"status of {status}" in message.text and url.split("?")[0].endswith(path):
                    return
            self.errors.append(f"console.error: {message.text} @ {message.location}")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"pageerror: {error}")


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def create_task(api: httpx.Client, title: str) -> int:
    response = api.post("/api/tasks", json={"title": title, "description": "from the UI tests"})
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


@contextmanager
def open_page(browser: Any, base_url: str) -> Iterator[Any]:
    """A page in a fresh browser context on `base_url`, the UI served with the strict CSP; on
    exit, fails on any browser console error or uncaught page error it recorded."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)

    def with_csp(route: Any) -> None:
        response = route.fetch()
        headers = {**response.headers, "content-security-policy": CSP}
        route.fulfill(response=response, headers=headers)

    context.route(re.compile(r"^https?://[^/]+/(\?[^/]*)?$"), with_csp)  # the page itself
    page = context.new_page()
    console = Console()
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    page.console = console
    try:
        yield page
    finally:
        context.close()
    assert not console.errors, "browser console errors:\n" + "\n".join(console.errors)
