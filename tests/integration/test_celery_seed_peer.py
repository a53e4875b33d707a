"""The Celery seed peer that `bench.bench_vs_celery` measures rag-poc against: its admission
must refuse duplicates as the seed did (lock precheck, `SET NX PX` token lock, atomic database
update) and queue exactly one Celery message per accepted run, else its figures mean nothing.
Real Valkey and SQLite; no worker runs, so an accepted run stays queued in the broker."""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import redis

from bench.peers.celery_seed import db
from bench.peers.celery_seed.config import SeedConfig, lock_key

pytest.importorskip("celery", reason="the peer needs the optional `peers` dependencies")

PEER_MODULES = ("bench.peers.celery_seed.app", "bench.peers.celery_seed.worker")
CELERY_QUEUE = "celery"  # the list the Redis broker keeps the default queue's messages in


@pytest.fixture
async def peer(
    valkey_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[ModuleType, SeedConfig, httpx.AsyncClient]]:
    url: str = valkey_server.connection_url
    config = SeedConfig(url, str(tmp_path / "seed.db"), "http://127.0.0.1:9", "http://127.0.0.1:9")
    db.create_schema(config.db_path)
    for name, value in config.env().items():
        monkeypatch.setenv(name, value)
    for name in PEER_MODULES:  # they read their configuration when imported
        sys.modules.pop(name, None)
    app = importlib.import_module(PEER_MODULES[0])
    transport = httpx.ASGITransport(app=app.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://peer") as client:
            yield app, config, client
    finally:
        await app.REDIS.aclose()
        with redis.Redis.from_url(url) as plain:
            plain.delete(CELERY_QUEUE, *plain.keys("seed:*"))
        for name in PEER_MODULES:
            sys.modules.pop(name, None)


def queued(config: SeedConfig) -> int:
    with redis.Redis.from_url(config.redis_url) as client:
        return int(client.llen(CELERY_QUEUE))


async def test_a_second_run_is_refused_until_the_first_ends(
    peer: tuple[ModuleType, SeedConfig, httpx.AsyncClient],
) -> None:
    app, config, client = peer
    created = await client.post("/api/tasks", json={"title": "Why is the sky blue?"})
    assert created.status_code == 201
    task_id = created.json()["id"]

    first = await client.post("/run-agents", json={"id": task_id})
    second = await client.post("/run-agents", json={"id": task_id})

    assert first.status_code == 202
    assert second.status_code == 409
    assert "precheck" in second.json()["detail"]
    assert queued(config) == 1
    listed = (await client.get("/api/tasks")).json()["tasks"]
    assert listed == [{"id": task_id, "title": "Why is the sky blue?", "status": "running"}]

    with redis.Redis.from_url(config.redis_url) as plain:  # what the worker does at the end
        token = plain.get(lock_key(task_id))
        assert token is not None
        db.finish(config.db_path, task_id, "done", "because")
        plain.eval(app.RELEASE, 1, lock_key(task_id), token)
    third = await client.post("/run-agents", json={"id": task_id})
    assert third.status_code == 202
    assert queued(config) == 2


async def test_the_database_layer_refuses_a_running_task_and_frees_the_lock(
    peer: tuple[ModuleType, SeedConfig, httpx.AsyncClient],
) -> None:
    _app, config, client = peer
    task_id = db.create_task(config.db_path, "held elsewhere", "")
    assert db.mark_running(config.db_path, task_id) == "ok"  # a run whose lock has lapsed

    refused = await client.post("/run-agents", json={"id": task_id})
    missing = await client.post("/run-agents", json={"id": task_id + 1})

    assert refused.status_code == 409
    assert "database" in refused.json()["detail"]
    assert missing.status_code == 404
    with redis.Redis.from_url(config.redis_url) as plain:
        assert plain.exists(lock_key(task_id), lock_key(task_id + 1)) == 0
    assert queued(config) == 0
