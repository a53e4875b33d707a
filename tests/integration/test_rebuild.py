"""Rebuilding the read models from the archive gives the same rows as the live projector,
after a workload with conflicts, failures and repeated runs."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.database import create_engine
from libs.events import Keys
from libs.readmodels.rebuild import rebuild_from_archive
from libs.readmodels.schema import event_archive
from tests.eventually import eventually
from tests.integration.inprocess import InProcessStack, in_process_stack
from tests.readmodel_snapshot import snapshot


async def workload(stack: InProcessStack) -> None:
    client = stack.client
    ids = [
        (await client.post("/api/tasks", json={"title": f"Why is the sky blue? {n}"})).json()["id"]
        for n in range(4)
    ]
    for task_id in ids:
        reply = await client.post("/run-agents", params={"wait": 20}, json={"id": task_id})
        assert reply.status_code == 200
    # conflicts: a held run and requests refused while it holds the task
    await stack.wait_until_released(ids[0])
    held = await client.post("/run-agents", json={"id": ids[0], "hold_seconds": 1})
    assert held.status_code == 202
    for _ in range(3):
        assert (await client.post("/run-agents", json={"id": ids[0]})).status_code == 409
    # a failure, then a retry that succeeds
    failing = {"id": ids[1], "query": "sky [[mockai:fail-midstream]]"}
    assert (await client.post("/run-agents", params={"wait": 20}, json=failing)).status_code == 200
    await stack.wait_until_released(ids[1])
    retry = await client.post("/run-agents", params={"wait": 20}, json={"id": ids[1]})
    assert retry.status_code == 200
    await stack.wait_until_released(ids[0])  # the held run is over
    again = await client.post("/run-agents", params={"wait": 20}, json={"id": ids[0]})
    assert again.status_code == 200


async def until_every_lock_is_released(engine: AsyncEngine) -> None:
    """Until every acquired lock was released and the projector has folded it: the runner
    appends `lock.released` just after the outcome that `?wait` answers on."""

    async def activity_types() -> list[str]:
        return [a["type"] for a in (await snapshot(engine))["activity"]]

    await eventually(
        activity_types,
        until=lambda types: types.count("lock.acquired") == types.count("lock.released") > 0,
        message="the workload's runs never all released their locks",
    )


async def test_rebuild_from_the_archive_equals_the_live_read_models(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> None:
    async with in_process_stack(redis_url, database_url, keys, str(tmp_path), dev=True) as stack:
        engine = create_engine(stack.settings.sqlalchemy_url)
        try:
            await workload(stack)
            await until_every_lock_is_released(engine)
        finally:
            await engine.dispose()
    # the stack and its projector are stopped, so the live rows can no longer change: rebuild
    # like an operator would and compare
    engine = create_engine(stack.settings.sqlalchemy_url)
    try:
        live = await snapshot(engine)
        async with engine.connect() as conn:
            archived = (
                await conn.execute(sa.select(sa.func.count()).select_from(event_archive))
            ).scalar_one()
        report = await rebuild_from_archive(engine)
        rebuilt = await snapshot(engine)
    finally:
        await engine.dispose()
    assert report.events == archived > 50
    assert {t["status"] for t in live["tasks"]} == {"done"}
    assert any(r["status"] == "failed" for r in live["runs"])
    assert any(a["type"] == "lock.conflict" for a in live["activity"])
    assert rebuilt == live
