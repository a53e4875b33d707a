"""The UI agent flow, in a headless Chromium: a document is ingested, a question is typed into
the "Ask the agent" panel (`#agent-query`, `#agent-submit`), and the answer streams into
`#agent-response` with the retrieved text of that document.

The UI under test is RAGPOC_UI_URL when set (a stack you started, e.g. `ragpoc up` or compose:
http://127.0.0.1:8001), otherwise the `ragpoc up` stack the fixtures of this package start. The
page is served with the strict Content-Security-Policy and any browser console error fails the
test (tests/ui/pages.py). Chromium is Debian's (/usr/bin/chromium, or RAGPOC_CHROMIUM), driven
by Playwright without downloading a browser:

    RAGPOC_UI_URL=http://127.0.0.1:8001 .venv/bin/pytest tests/ui/test_ui_agent_flow.py -q
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.eventually import eventually_sync
from tests.ui.pages import create_task, open_page, shot

pytestmark = pytest.mark.ui

ANSWER_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def ui_url(request: pytest.FixtureRequest) -> str:
    """RAGPOC_UI_URL, else the gateway of the package's `ragpoc up` stack (started only then)."""
    url = os.environ.get("RAGPOC_UI_URL", "").rstrip("/")
    return url or str(request.getfixturevalue("stack"))


@pytest.fixture
def ui_api(ui_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ui_url, timeout=70) as client:
        yield client


@pytest.fixture
def ui_page(browser: Any, ui_url: str) -> Iterator[Any]:
    with open_page(browser, ui_url) as page:
        yield page


def ingest(api: httpx.Client, text: str, title: str) -> None:
    """Ingest one document and wait until it is searchable."""
    reply = api.post("/api/ingest?wait=30", json={"text": text, "title": title})
    assert reply.status_code == 200, reply.text


def projected_done(api: httpx.Client, task_id: int) -> dict[str, Any]:
    """The task once the read model has its run done (the page shows it from the events)."""
    task: dict[str, Any] = eventually_sync(
        lambda: api.get(f"/api/tasks/{task_id}").json(),
        until=lambda body: body["status"] == "done",
        message=f"task {task_id} never projected as done",
    )
    return task


def record_answers(page: Any) -> None:
    """Keep every text the answer shows, in `window.__answers`, to see it stream."""
    page.evaluate(
        """() => { window.__answers = []; const out = document.querySelector('#agent-response');
        new MutationObserver(() => {
          const a = out.querySelector('.agent-answer');
          if (a && a.textContent) window.__answers.push(a.textContent);
        }).observe(out, {childList: true, characterData: true, subtree: true}); }"""
    )


def test_the_answer_streams_in_with_the_retrieved_text(
    ui_page: Any, ui_api: httpx.Client, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    marker = f"kelp{uuid.uuid4().hex[:8]}"  # this run's document, whatever the index holds
    text = f"The harbour of Stromness smells of {marker} and tar at low tide."
    ingest(ui_api, text, "harbour notes")

    ui_page.goto("/#/query")
    expect(ui_page.locator("#conn")).to_have_attribute("data-state", "live")
    record_answers(ui_page)
    ui_page.locator("#agent-query").fill(f"What does the harbour of Stromness smell of? {marker}")
    ui_page.locator("#agent-submit").click()

    response = ui_page.locator("#agent-response")
    expect(response).to_contain_text(text, timeout=ANSWER_TIMEOUT_MS)
    status = response.locator(".agent-status .status")
    expect(status).to_have_text("done", timeout=ANSWER_TIMEOUT_MS)
    expect(response.locator(".agent-sources")).to_contain_text(marker)
    answer = response.locator(".agent-answer")
    expect(answer).to_contain_text("According to [1]")
    answers = ui_page.evaluate("window.__answers")
    assert len(set(answers)) > 1, answers  # token by token, not all at once
    assert answers[-1] == answer.inner_text()
    shot(ui_page, artifacts, "agent-flow")

    # the task made for the question is linked, and holds the same answer
    link = response.locator(".agent-status a")
    task_id = int(re.sub(r"\D", "", link.inner_text()))
    task = projected_done(ui_api, task_id)
    assert task["last_answer"] == answer.inner_text()


def test_a_question_on_the_selected_task_runs_that_task(
    ui_page: Any, ui_api: httpx.Client, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    marker = f"tern{uuid.uuid4().hex[:8]}"
    text = f"Arctic terns nest on the {marker} shingle of Orkney every summer."
    ingest(ui_api, text, "bird notes")
    task_id = create_task(ui_api, "A task asked from its page")

    ui_page.goto(f"/#/tasks/{task_id}")
    ui_page.get_by_role("link", name="Ask the agent a question on this task").click()
    expect(ui_page).to_have_url(re.compile(rf"#/query/{task_id}$"))
    expect(ui_page.locator("#agent-task")).to_have_value(str(task_id))
    ui_page.locator("#agent-query").fill(f"Where do Arctic terns nest? {marker}")
    ui_page.locator("#agent-submit").click()

    response = ui_page.locator("#agent-response")
    expect(response).to_contain_text(text, timeout=ANSWER_TIMEOUT_MS)
    expect(response.locator(".agent-status")).to_contain_text(f"Task #{task_id}")
    expect(response.locator(".agent-status .status")).to_have_text("done")
    shot(ui_page, artifacts, "agent-flow-task")
    task = projected_done(ui_api, task_id)
    assert len(task["run_history"]) == 1, task  # the question ran this task
    assert task["run_history"][0]["query"].startswith("Where do Arctic terns nest?"), task


def test_a_question_on_a_busy_task_names_the_run_holding_it(
    ui_page: Any, ui_api: httpx.Client
) -> None:
    from playwright.sync_api import expect

    task_id = create_task(ui_api, "A task kept busy")
    held = ui_api.post("/run-agents", json={"id": task_id, "hold_seconds": 5})
    if held.status_code == 422:
        pytest.skip("the gateway under test is not in dev mode (RAGPOC_DEV=1): no held run")
    assert held.status_code == 202, held.text
    ui_page.console.expected.add((409, "/run-agents"))

    ui_page.goto(f"/#/query/{task_id}")
    ui_page.locator("#agent-query").fill("Is anyone there?")
    ui_page.locator("#agent-submit").click()
    alert = ui_page.locator("#agent-response .alert")
    expect(alert).to_contain_text("This task is already being run")
    expect(alert).to_contain_text(held.json()["run_id"])
    expect(ui_page.locator("#agent-submit")).to_be_enabled()
