"""`ragpoc parked` lists what the projector set aside and replays it once the cause is fixed."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.events import EventStore, Keys, TaskCreated
from libs.readmodels import get_task
from services.cli import main
from services.projector.main import Projector
from tests.integration.projector_support import (
    POISON,
    accept_poisoned_titles,
    refuse_poisoned_titles,
)


async def ragpoc(argv: list[str]) -> int:
    code: int = await asyncio.to_thread(main, argv)
    return code


async def test_parked_lists_the_refused_event_then_replays_it_after_the_fix(
    redis_client: aioredis.Redis,
    keys: Keys,
    engine: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    await refuse_poisoned_titles(engine)
    store = EventStore(redis_client, keys)
    created = await store.append(TaskCreated(task_id=5, title=f"a {POISON} pill"))
    projector = Projector(redis_client, engine, keys)
    await projector.start()
    await projector.catch_up()

    listed = await ragpoc(["parked"])
    lines = capsys.readouterr().out.splitlines()
    as_json = await ragpoc(["parked", "--task", "5", "--json"])
    [entry] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    refused = await ragpoc(["parked", "--replay"])
    refused_out = capsys.readouterr().out
    await accept_poisoned_titles(engine)
    replayed = await ragpoc(["parked", "--replay", "--entry", created.log_id])
    replayed_out = capsys.readouterr().out
    after = await ragpoc(["parked"])

    assert (listed, as_json, refused, replayed, after) == (0, 0, 1, 0, 0)
    assert created.log_id in lines[0]
    assert "task.created" in lines[0]
    assert "no_poison" in lines[0]
    assert lines[-1] == "1 parked entries"
    assert (entry["log_id"], entry["task_id"], entry["type"]) == (created.log_id, 5, "task.created")
    assert "0 replayed, 1 still parked" in refused_out
    assert "1 replayed, 0 still parked" in replayed_out
    assert capsys.readouterr().out.strip() == "0 parked entries"
    task = await get_task(engine, 5)
    assert task is not None
    assert task.title == f"a {POISON} pill"
