"""The web UI's other pages, driven in a headless Chromium: the agent query, ingesting a file
and searching for it, the jobs view; every page under the strict Content-Security-Policy; and the
UI's files as the gateway serves them.

Every test fails on a browser console error or an uncaught page error, and every page is served
with a strict Content-Security-Policy (the `page` fixture of tests/ui/conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ui.pages import CSP, shot

pytestmark = pytest.mark.ui


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


def test_every_page_renders_under_a_strict_csp(page: Any) -> None:
    from playwright.sync_api import expect

    response = page.goto("/#/tasks")
    assert response.headers["content-security-policy"] == CSP
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#tasks-count")).to_contain_text("task")
    for route, marker in (
        ("#/query", "#agent-query"),
        ("#/jobs", '[data-service="runner"]'),
        ("#/ingest", "#ingest-form"),
        ("#/nowhere", "text=No such page"),
    ):
        page.evaluate(f"location.hash = '{route}'")
        expect(page.locator(marker)).to_be_visible()


def test_the_ui_files_are_served_and_revalidated(api: httpx.Client) -> None:
    for path, kind in (
        ("/", "text/html"),
        ("/static/js/main.js", "javascript"),
        ("/static/js/pages/task.js", "javascript"),
        ("/static/css/app.css", "text/css"),
    ):
        response = api.get(path)
        assert response.status_code == 200, path
        assert kind in response.headers["content-type"], (path, response.headers)
        assert response.headers["cache-control"] == "no-cache", path
    assert api.get("/static/%2e%2e/app.py").status_code == 404  # nothing outside static/
    assert api.get("/static/js/nothing.js").status_code == 404
