"""Commands started beside `ragpoc up` find its stack by themselves, as the README promises:
no REDIS_URL, no --base-url, only the same data folder."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cli_runner import ragpoc
from tests.stackproc import ragpoc_up

pytestmark = pytest.mark.e2e


def test_events_and_ingest_find_the_running_stack_and_not_a_stopped_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    notes = tmp_path / "notes.md"
    notes.write_text("# Azores\nThe sky over the Azores turns cobalt blue after a storm.\n")
    with ragpoc_up(data_dir, {}) as stack:
        assert (data_dir / "stack.json").is_file()
        task = httpx.post(f"{stack.base_url}/api/tasks", json={"title": "found?"}).json()

        events = ragpoc("events", str(task["id"]), data_dir=data_dir)
        assert events.returncode == 0, events.stderr
        assert "task.created" in events.stdout

        ingest = ragpoc("ingest", str(notes), data_dir=data_dir)
        assert ingest.returncode == 0, ingest.stdout + ingest.stderr
        assert "ingested 1 documents" in ingest.stdout

    assert not (data_dir / "stack.json").exists()
    after = ragpoc("events", str(task["id"]), data_dir=data_dir)
    assert after.returncode == 2
    assert "no `ragpoc up` stack runs from" in after.stderr
