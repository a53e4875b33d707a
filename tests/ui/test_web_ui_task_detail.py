"""The web UI's task page, driven in a headless Chromium: who holds the lock when a second run
is refused, and the live activity timeline surviving a dropped event stream on a narrow screen;
plus the Activity API the timeline pages through.

Every test fails on a browser console error or an uncaught page error, and every page is served
with a strict Content-Security-Policy (the `page` fixture of tests/ui/conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ui.pages import create_task, shot

pytestmark = pytest.mark.ui


def test_second_run_shows_who_holds_the_lock(page: Any, api: httpx.Client, artifacts: Path) -> None:
    from playwright.sync_api import expect

    task_id = create_task(api, "Held task")
    page.goto(f"/#/tasks/{task_id}")
    expect(page.locator("#task-status")).to_have_text("new")
    held = api.post("/run-agents", json={"id": task_id, "hold_seconds": 5})
    assert held.status_code == 202, held.text
    holder = held.json()["run_id"]
    run = page.locator("#run-button")
    # live over SSE: the button goes disabled while the held run is queued/running
    expect(run).to_be_disabled()
    page.console.expected.add((409, "/run-agents"))  # the conflict this test provokes
    # force a second request from the UI (the operator double-clicks from a stale page)
    page.evaluate("document.querySelector('#run-button').disabled = false")
    run.click()
    message = page.locator("#run-msg")
    expect(message).to_contain_text("already being run")
    expect(message).to_contain_text(holder)
    expect(message.locator("time")).to_have_count(1)
    expect(message).not_to_contain_text("{")
    conflict = page.locator("#locks-table tbody tr.conflict")
    expect(conflict).to_have_count(1)
    expect(conflict).to_contain_text(holder)
    shot(page, artifacts, "task-conflict")
    expect(page.locator("#task-status")).to_have_text("done", timeout=30_000)
    expect(run).to_be_enabled()


def first_frames(stack: str, task_id: int, count: int) -> list[tuple[str, str]]:
    """The first `count` SSE frames of a task's stream as (entry id, raw frame)."""
    frames: list[tuple[str, str]] = []
    with httpx.stream("GET", f"{stack}/events/tasks/{task_id}", timeout=10) as response:
        block: list[str] = []
        for line in response.iter_lines():
            if line:
                block.append(line)
                continue
            entry = next((b[4:] for b in block if b.startswith("id: ")), None)
            if entry is not None:
                frames.append((entry, "\n".join(block) + "\n\n"))
            block = []
            if len(frames) == count:
                return frames
    raise AssertionError(f"fewer than {count} frames")


def test_narrow_screen_and_reconnect(
    page: Any, api: httpx.Client, stack: str, artifacts: Path
) -> None:
    """A phone-sized viewport; the task stream drops after a few events and the browser
    reconnects: the timeline ends complete, with no event shown twice."""
    from playwright.sync_api import expect

    task_id = create_task(api, "Reconnect task")
    response = api.post("/run-agents?wait=30", json={"id": task_id})
    assert response.status_code == 200, response.text
    head = first_frames(stack, task_id, 5)
    requests: list[str] = []

    def drop_after_head(route: Any) -> None:
        # the first connection ends after five events (the fifth sent twice, as a flaky proxy
        # might); the browser reconnects by itself with Last-Event-ID (which Chromium adds
        # below the interception layer, so it is not in route.request's headers) and the
        # gateway resumes after it.
        requests.append(route.request.url)
        if len(requests) == 1:
            body = "retry: 300\n\n" + "".join(frame for _id, frame in head) + head[-1][1]
            route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body)
        else:
            route.continue_()

    page.route(re.compile(rf"/events/tasks/{task_id}(\?.*)?$"), drop_after_head)
    page.add_init_script(
        """window.__conn = []; document.addEventListener('DOMContentLoaded', () => {
        const c = document.querySelector('#conn');
        new MutationObserver(() => window.__conn.push(c.dataset.state))
          .observe(c, {attributes: true, attributeFilter: ['data-state']}); });"""
    )
    page.set_viewport_size({"width": 380, "height": 800})
    page.goto(f"/#/tasks/{task_id}")
    expect(page.locator("#task-status")).to_have_text("done")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    assert len(requests) >= 2, requests
    assert "reconnecting" in page.evaluate("window.__conn")
    for kind in (
        "task.created",
        "lock.acquired",
        "run.requested",
        "run.started",
        "retrieval.done",
        "run.completed",
        "lock.released",
    ):
        expect(page.locator(f'#activity li[data-type="{kind}"]')).to_have_count(1)
    ids = page.eval_on_selector_all("#activity li", "els => els.map(e => e.dataset.entry)")
    assert len(ids) == len(set(ids)), ids
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 380, f"the page scrolls sideways on a narrow screen ({width}px)"
    shot(page, artifacts, "task-narrow")


def test_activity_items_carry_the_projected_task_and_page_by_cursor(api: httpx.Client) -> None:
    task_id = create_task(api, "Cursor task")
    assert api.post("/run-agents?wait=30", json={"id": task_id}).status_code == 200
    items = api.get(f"/api/tasks/{task_id}/activity").json()["activity"]
    by_type = {item["type"]: item for item in items}
    assert by_type["task.created"]["task"]["status"] == "new"
    assert by_type["run.started"]["task"]["status"] == "running"
    assert by_type["run.completed"]["task"]["status"] == "done"
    assert by_type["run.completed"]["task"]["last_answer"]
    after = items[2]["entry_id"]
    rest = api.get(f"/api/tasks/{task_id}/activity", params={"after": after}).json()["activity"]
    assert rest == items[3:]
    bad = api.get(f"/api/tasks/{task_id}/activity", params={"after": "yesterday"})
    assert bad.status_code == 422
    assert "after" in bad.json()["error"]["message"]
