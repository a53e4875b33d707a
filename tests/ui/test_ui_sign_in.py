"""The web UI against a gateway with API tokens (RAGPOC_API_TOKENS), in a headless Chromium: the
console shows a sign-in first, refuses a wrong token, signs in with a right one (a session
cookie that then carries every request and the live event streams), brings the sign-in back
when the session ends, and signs out. Against the package's stack, which runs without tokens,
neither the sign-in nor the sign-out shows.

Chromium logs each 401 it is answered as a console error; a test lists the ones it provokes on
purpose in `page.console.expected`, and every other console error still fails it."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stackproc import ragpoc_up
from tests.ui.pages import create_task, open_page, shot

pytestmark = pytest.mark.ui

WRITE_TOKEN = secrets.token_urlsafe(24)
READ_TOKEN = secrets.token_urlsafe(24)
SESSION_ENDED = "Your session has ended"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`ragpoc up` with a write token (`operator`) and a read token (`viewer`)."""
    data = tmp_path_factory.mktemp("ui-auth-stack")
    tokens = f"operator:write:{WRITE_TOKEN},viewer:read:{READ_TOKEN}"
    env = {"RAGPOC_DEV": "1", "RAGPOC_API_TOKENS": tokens, "RAGPOC_API_TOKENS_FILE": ""}
    with ragpoc_up(data, env) as up:
        yield up.base_url


@pytest.fixture
def writer(secured: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    with httpx.Client(base_url=secured, timeout=70, headers=headers) as client:
        yield client


@pytest.fixture
def signed_out(browser: Any, secured: str) -> Iterator[Any]:
    """A browser page on the secured stack, without a session yet."""
    with open_page(browser, secured) as page:
        page.console.expected.add((401, "/api/session"))  # "am I signed in?" at load: no
        yield page


def sign_in(page: Any, token: str) -> None:
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def session_cookie(page: Any) -> dict[str, Any] | None:
    found = [c for c in page.context.cookies() if c["name"] == "ragpoc_session"]
    return found[0] if found else None


def test_sign_in_follow_tasks_live_and_sign_out(
    signed_out: Any, writer: httpx.Client, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    page = signed_out
    page.goto("/#/tasks")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_label("API token")).to_have_attribute("type", "password")
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    expect(page.locator("#tasks-table")).to_have_count(0)
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()

    sign_in(page, "not-the-token-at-all-0123456789")
    expect(page.locator("#signin-msg")).to_contain_text("not valid")
    expect(page.locator("#tasks-table")).to_have_count(0)
    assert session_cookie(page) is None
    shot(page, artifacts, "sign-in-refused")

    sign_in(page, WRITE_TOKEN)
    expect(page.locator("#tasks-table")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(page.locator("#session-name")).to_have_text("operator (write)")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")  # /events: the cookie
    cookie = session_cookie(page)
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    assert WRITE_TOKEN not in cookie["value"]

    # the list follows a task created and run elsewhere, over the stream the cookie opened
    task_id = create_task(writer, "Created behind the sign-in")
    row = page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')
    expect(row.locator(".status")).to_have_text("new")
    assert writer.post("/run-agents", json={"id": task_id}).status_code == 202
    expect(row.locator(".status")).to_have_text("done")
    shot(page, artifacts, "signed-in")

    # the page's own writes go through the session too
    page.get_by_label("Title").fill("Created in the signed-in page")
    page.get_by_role("button", name="Create task").click()
    expect(page.locator("#task-form-msg a")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#signin-msg")).to_contain_text("signed out")
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    assert session_cookie(page) is None
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_request_refused_later_brings_the_sign_in_back(signed_out: Any) -> None:
    from playwright.sync_api import expect

    page = signed_out
    page.console.expected.add((401, "/api/jobs"))
    page.goto("/#/tasks")
    sign_in(page, WRITE_TOKEN)
    expect(page.locator("#tasks-table")).to_be_visible()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")  # the feed is open
    page.context.clear_cookies()  # as when the session expires
    page.evaluate("location.hash = '#/jobs'")  # the jobs page asks GET /api/jobs: 401
    expect(page.locator("#signin-msg")).to_contain_text(SESSION_ENDED)
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    sign_in(page, WRITE_TOKEN)
    expect(page.locator('[data-service="runner"]')).to_be_visible()  # back where it was


def test_a_stream_refused_after_the_session_ended_brings_the_sign_in_back(
    signed_out: Any,
) -> None:
    """An EventSource cannot see why it failed: while the session holds it keeps reopening the
    stream; once GET /api/session says the session is gone, the sign-in comes back, though no
    other request of the page failed."""
    from playwright.sync_api import expect

    page = signed_out
    page.console.expected.add((401, "/events"))
    refused: list[str] = []

    def refuse_the_feed(route: Any) -> None:  # as a gateway does once the cookie has expired
        refused.append(route.request.url)
        route.fulfill(status=401, content_type="application/json", body='{"error": {}}')

    page.route(re.compile(r"/events(\?.*)?$"), refuse_the_feed)
    page.goto("/#/tasks")
    sign_in(page, WRITE_TOKEN)
    expect(page.locator("#tasks-table")).to_be_visible()
    expect(page.locator("#conn")).to_have_attribute("data-state", "offline")
    page.wait_for_timeout(2500)  # one more attempt: the session holds, so it reopens
    assert len(refused) >= 2, refused
    expect(page.locator("#tasks-table")).to_be_visible()

    page.context.clear_cookies()
    expect(page.locator("#signin-msg")).to_contain_text(SESSION_ENDED)
    attempts = len(refused)
    page.wait_for_timeout(2500)
    assert len(refused) == attempts, "the stream reopens though the session has ended"


def test_a_read_token_reads_but_its_writes_are_refused(
    signed_out: Any, writer: httpx.Client
) -> None:
    from playwright.sync_api import expect

    page = signed_out
    page.console.expected.add((403, "/api/tasks"))
    task_id = create_task(writer, "Seen with a read token")
    page.goto("/#/tasks")
    sign_in(page, READ_TOKEN)
    expect(page.locator("#session-name")).to_have_text("viewer (read)")
    expect(page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')).to_be_visible()
    page.get_by_label("Title").fill("Not allowed")
    page.get_by_role("button", name="Create task").click()
    expect(page.locator("#task-form-msg")).to_contain_text("may only read")
    expect(page.locator("#tasks-table")).to_be_visible()  # refused, but still signed in


def test_without_tokens_there_is_no_sign_in_and_no_sign_out(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/#/tasks")
    expect(page.locator("#tasks-table")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    expect(page.locator("#signin-form")).to_have_count(0)
