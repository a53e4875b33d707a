"""Per-request test knobs are refused unless the server runs in development mode."""

from __future__ import annotations

from pathlib import Path

from libs.events import Keys
from tests.integration.inprocess import in_process_stack


async def test_hold_seconds_is_refused_outside_dev_mode(
    redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with in_process_stack(redis_url, database_url, keys, str(tmp_path)) as stack:
        task = (await stack.client.post("/api/tasks", json={"title": "t"})).json()
        reply = await stack.client.post("/run-agents", json={"id": task["id"], "hold_seconds": 3})
    assert reply.status_code == 422
    assert "RAGPOC_DEV=1" in reply.json()["error"]["message"]
