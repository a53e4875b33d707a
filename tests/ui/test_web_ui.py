"""The operator web UI served by the gateway at `/`, driven in a headless Chromium: a task from
the tasks list to its answer, and the list following every task's status live.

Every test fails on a browser console error or an uncaught page error, and every page is served
with a strict Content-Security-Policy (no 'unsafe-inline'), whose violations are console errors
(the `page` fixture of tests/ui/conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ui.pages import create_task, shot

pytestmark = pytest.mark.ui


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
    # the last event is projected after it reached the page: it still shows, without a reload
    expect(activity.locator('li[data-type="lock.released"]')).to_have_count(1)
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
