"""The operator web UI served by the gateway at `/`, driven in a headless Chromium.

Every test fails on a browser console error or an uncaught page error."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.ui

TIMEOUT_MS = 20_000


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


@pytest.fixture
def api(stack: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack, timeout=70) as client:
        yield client


@pytest.fixture
def page(browser: Any, stack: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(base_url=stack, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console = Console()
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    page.console = console
    yield page
    context.close()
    assert not console.errors, "browser console errors:\n" + "\n".join(console.errors)


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def create_task(api: httpx.Client, title: str) -> int:
    response = api.post("/api/tasks", json={"title": title, "description": "from the UI tests"})
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


def test_create_task_run_it_and_see_the_answer(
    page: Any, api: httpx.Client, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    api.post(
        "/api/ingest?wait=30", json={"text": "Tea clippers sailed from Foochow.", "title": "ships"}
    )
    page.goto("/#/tasks")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    page.get_by_label("Title").fill("Which ships carried tea?")
    page.get_by_label("Description").fill("a UI test task")
    page.get_by_role("button", name="Create task").click()
    created = page.locator("#task-form-msg a")
    expect(created).to_be_visible()
    task_id = int(re.sub(r"\D", "", created.inner_text()))
    row = page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')
    expect(row).to_contain_text("Which ships carried tea?")
    expect(row.locator(".status")).to_have_text("new")
    shot(page, artifacts, "tasks")

    row.get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"#/tasks/{task_id}$"))
    expect(page.locator("#task-status")).to_have_text("new")
    run = page.locator("#run-button")
    expect(run).to_be_enabled()
    # record every status the page shows while the run goes on
    page.evaluate(
        """() => { window.__seen = []; const s = document.querySelector('#task-status');
        new MutationObserver(() => window.__seen.push(s.textContent))
          .observe(s, {childList: true, characterData: true, subtree: true});
        window.__answers = []; const a = document.querySelector('#task-answer');
        new MutationObserver(() => window.__answers.push(a.textContent))
          .observe(a, {childList: true, characterData: true, subtree: true}); }"""
    )
    run.click()
    expect(page.locator("#task-status")).to_have_text("done")
    seen = page.evaluate("window.__seen")
    assert "running" in seen, seen
    assert seen.index("running") < seen.index("done"), seen
    expect(page.locator("#task-answer")).to_contain_text("According to [1]")
    answers = [a for a in page.evaluate("window.__answers") if a]
    assert len(answers) > 1, answers  # token by token, not all at once
    assert len(answers[0]) < len(answers[-1]), answers
    expect(page.locator("#task-sources")).to_contain_text("Tea clippers sailed from Foochow.")
    expect(run).to_be_enabled()
    activity = page.locator("#activity")
    for kind in ("task.created", "run.requested", "run.started", "retrieval.done", "run.completed"):
        expect(activity.locator(f'li[data-type="{kind}"]')).to_have_count(1)
    expect(page.locator("#locks-table tbody tr")).to_have_count(2)  # acquired + released
    shot(page, artifacts, "task-detail")

    # time travel: back to the first event shows the task as it was created
    scrubber = page.locator("#scrubber")
    scrubber.focus()
    page.keyboard.press("Home")
    expect(page.locator("#task-status")).to_have_text("new")
    expect(page.locator("#task-answer")).to_have_text("")
    expect(run).to_be_disabled()
    page.keyboard.press("End")
    expect(page.locator("#task-status")).to_have_text("done")

    # the list shows the live status too
    page.get_by_role("link", name="All tasks").first.click()
    expect(page.locator(f'#tasks-table tr[data-task-id="{task_id}"] .status')).to_have_text("done")
    page.get_by_label("Filter by status").select_option("new")
    expect(page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')).to_have_count(0)
    page.get_by_label("Filter by status").select_option("done")
    expect(page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')).to_have_count(1)

    # a task created and run elsewhere shows up and moves live, without a reload
    page.get_by_label("Filter by status").select_option("")
    other = create_task(api, "Created through the API")
    other_row = page.locator(f'#tasks-table tr[data-task-id="{other}"]')
    expect(other_row.locator(".status")).to_have_text("new")
    assert api.post("/run-agents", json={"id": other}).status_code == 202
    expect(other_row.locator(".status")).to_have_text("done")


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


def test_agent_query_shows_answer_and_retrieved_text(
    page: Any, api: httpx.Client, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    ingested = api.post(
        "/api/ingest?wait=30",
        json={"text": "The sky over the Azores turns cobalt blue after a storm.", "title": "notes"},
    )
    assert ingested.status_code == 200, ingested.text
    page.goto("/#/query")
    page.locator("#agent-query").fill("What colour is the sky over the Azores?")
    page.locator("#agent-submit").click()
    response = page.locator("#agent-response")
    expect(response.locator(".agent-answer")).to_be_visible(timeout=60_000)
    expect(response.locator(".agent-sources")).to_contain_text("cobalt")
    shot(page, artifacts, "agent-query")


def test_ingest_a_file_and_find_it_by_search(page: Any, artifacts: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    doc = tmp_path / "heron.md"
    doc.write_text("# Herons\n\nThe grey heron waits motionless in the saltmarsh of Wexford.\n")
    page.goto("/#/ingest")
    page.get_by_label("upload .txt / .md files").set_input_files(str(doc))
    page.get_by_role("button", name="Ingest").click()
    expect(page.locator("#ingest-table")).to_contain_text("heron.md", timeout=60_000)
    expect(page.locator("#ingest-table")).to_contain_text("ingested")
    page.get_by_label("Query").fill("grey heron saltmarsh")
    page.get_by_role("button", name="Search").click()
    expect(page.locator(".search-hits li").first).to_contain_text("saltmarsh of Wexford")
    shot(page, artifacts, "ingest")


def test_jobs_view_lists_running_workers(page: Any, artifacts: Path) -> None:
    from playwright.sync_api import expect

    page.goto("/#/jobs")
    for service in ("runner", "ingestor"):
        section = page.locator(f'[data-service="{service}"]')
        expect(section.locator(".worker-id")).not_to_have_count(0)
        expect(section.locator('[data-stat="lag"]')).to_have_text(re.compile(r"^\d+$"))
    updated = page.locator("#jobs-updated").inner_text()
    expect(page.locator("#jobs-updated")).not_to_have_text(updated, timeout=5_000)  # polled
    shot(page, artifacts, "jobs")


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
