"""Bad log entries never stop the projector, against a real Valkey/Redis and SQLite/PostgreSQL:
an entry that is no known event, or an event the database refuses, is parked with its raw fields
and reason in the transaction that moves the position past it; the rest of the batch is folded;
the trimmer drops only what is archived or parked; an operator replays parked entries after a
fix and gets the rows a rebuild would give."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common import Settings
from libs.common.database import create_engine
from libs.events import (
    EventStore,
    Keys,
    RunCompleted,
    RunRequested,
    RunStarted,
    TaskCreated,
    decode_event,
)
from libs.events.ids import entry_key
from libs.events.retention import Trimmer
from libs.readmodels import get_task, list_activity, list_runs, load_positions
from libs.readmodels.archive import SqlArchive
from libs.readmodels.queries import ParkedView, list_parked
from libs.readmodels.rebuild import rebuild_from_archive
from libs.readmodels.replay import replay_parked
from services.projector.main import Projector
from tests.eventually import eventually
from tests.integration.jobs_support import gateway
from tests.integration.projector_support import (
    POISON,
    accept_poisoned_titles,
    archived_ids,
    on_postgres,
    refuse_poisoned_titles,
)
from tests.readmodel_snapshot import snapshot
from tests.redisclock import until_redis_clock_passes


async def project(redis: aioredis.Redis, engine: AsyncEngine, keys: Keys) -> Projector:
    projector = Projector(redis, engine, keys)
    await projector.start()
    await projector.catch_up()
    return projector


async def parked_in_log_order(engine: AsyncEngine) -> list[ParkedView]:
    return sorted(await list_parked(engine), key=lambda p: (p.partition, entry_key(p.log_id)))


# Tasks 1, 5, 9, ... share partition 1 of 4: their events land in one log, one batch.


async def test_a_nul_character_postgres_refuses_is_parked_and_the_batch_goes_on(
    redis_client: aioredis.Redis, keys: Keys, engine: AsyncEngine
) -> None:
    store = EventStore(redis_client, keys)
    await store.append(TaskCreated(task_id=1, title="fine"))
    bad = await store.append(TaskCreated(task_id=5, title="a\x00b"))
    await store.append(RunRequested(task_id=1, run_id="r1", query="why"))
    last = await store.append(TaskCreated(task_id=9, title="also fine"))

    await project(redis_client, engine, keys)

    assert await load_positions(engine) == {1: last.log_id}
    task_one, task_nine = await get_task(engine, 1), await get_task(engine, 9)
    assert task_one is not None
    assert (task_one.status, task_one.runs) == ("queued", 1)
    assert task_nine is not None
    parked = await list_parked(engine)
    if on_postgres(engine):  # PostgreSQL text cannot hold NUL: parked, raw event intact
        assert [(p.log_id, p.task_id, p.type) for p in parked] == [(bad.log_id, 5, "task.created")]
        assert "NUL" in parked[0].reason
        assert "\x00" not in parked[0].reason
        event = decode_event(json.loads(parked[0].raw)["data"])
        assert isinstance(event, TaskCreated)
        assert event.title == "a\x00b"
        assert await get_task(engine, 5) is None
    else:  # SQLite stores it as it is
        assert parked == []
        task_five = await get_task(engine, 5)
        assert task_five is not None
        assert task_five.title == "a\x00b"


async def test_undecodable_entries_are_parked_whole_and_only_then_trimmed(
    redis_client: aioredis.Redis, keys: Keys, engine: AsyncEngine
) -> None:
    store = EventStore(redis_client, keys)
    log = keys.partition_log(1)
    await store.append(TaskCreated(task_id=1, title="before"))
    renamed = {
        "type": "task.renamed",  # a newer version's event type
        "data": '{"type":"task.renamed","task_id":5,"title":"x"}',
        "task": "5",
        "sid": "1-1",
    }
    renamed_id = await redis_client.xadd(log, renamed)  # type: ignore[arg-type]
    await store.append(TaskCreated(task_id=9, title="after"))
    bare_id = await redis_client.xadd(log, {"note": "written by hand"})  # last of its batch

    await project(redis_client, engine, keys)

    parked = await parked_in_log_order(engine)
    assert [(p.log_id, p.task_id, p.type, p.stream_id) for p in parked] == [
        (renamed_id, 5, "task.renamed", "1-1"),
        (bare_id, None, "", bare_id),
    ]
    assert [json.loads(p.raw) for p in parked] == [renamed, {"note": "written by hand"}]
    assert parked[0].reason.startswith("undecodable: not a known event")
    assert parked[1].reason == "undecodable: the entry has no data field"
    assert await load_positions(engine) == {1: bare_id}  # stored, not only in memory
    assert await get_task(engine, 9) is not None

    await until_redis_clock_passes(redis_client)
    await Trimmer(redis_client, keys, SqlArchive(engine), retention_s=0).run_once()
    assert await redis_client.xlen(log) == 0  # all archived or parked: nothing lost
    assert await parked_in_log_order(engine) == parked


async def test_only_the_refused_events_of_a_batch_are_parked(
    redis_client: aioredis.Redis, keys: Keys, engine: AsyncEngine
) -> None:
    await refuse_poisoned_titles(engine)
    store = EventStore(redis_client, keys)
    poisoned = {0, 11, 12, 23}
    refused = []
    for n in range(24):
        task_id = 1 + 4 * n
        title = f"{POISON} {n}" if n in poisoned else f"task {n}"
        appended = await store.append(TaskCreated(task_id=task_id, title=title))
        if n in poisoned:
            refused.append(appended.log_id)
        await store.append(RunRequested(task_id=task_id, run_id=f"run-{n}"))

    await project(redis_client, engine, keys)

    parked = await parked_in_log_order(engine)
    assert [p.log_id for p in parked] == refused
    assert all("no_poison" in p.reason for p in parked), [p.reason for p in parked]
    for n in range(24):
        task = await get_task(engine, 1 + 4 * n)
        assert (task is None) == (n in poisoned)
        assert task is None or task.runs == 1
        assert [r.run_id for r in await list_runs(engine, 1 + 4 * n)] == [f"run-{n}"]
    assert len(await archived_ids(engine)) == 48 - len(poisoned)


async def test_a_refused_event_holds_back_no_other_partition_of_the_step(
    redis_client: aioredis.Redis, keys: Keys, engine: AsyncEngine
) -> None:
    # one step reads every partition and applies them in one transaction; the database
    # refusing one event rolls all of it back, then each partition goes on its own
    await refuse_poisoned_titles(engine)
    store = EventStore(redis_client, keys)
    last: dict[int, str] = {}
    for task_id in range(1, 9):  # two tasks in each of the 4 partitions
        title = f"{POISON} {task_id}" if task_id == 6 else f"task {task_id}"
        await store.append(TaskCreated(task_id=task_id, title=title))
        appended = await store.append(RunRequested(task_id=task_id, run_id=f"run-{task_id}"))
        last[keys.partition_of(task_id)] = appended.log_id

    projector = Projector(redis_client, engine, keys)
    await projector.start()
    assert await projector.step(block_ms=None) == 16  # every entry, in one step

    assert await load_positions(engine) == last
    assert [(p.task_id, p.type) for p in await list_parked(engine)] == [(6, "task.created")]
    for task_id in range(1, 9):
        task = await get_task(engine, task_id)
        assert (task is None) == (task_id == 6)
        assert [r.run_id for r in await list_runs(engine, task_id)] == [f"run-{task_id}"]


async def test_two_projectors_at_once_park_and_fold_each_entry_once(
    redis_client: aioredis.Redis, keys: Keys, engine: AsyncEngine
) -> None:
    await refuse_poisoned_titles(engine)
    store = EventStore(redis_client, keys)
    poisoned = {4, 13, 22, 31}
    for n in range(40):  # over every partition
        title = f"{POISON} {n}" if n in poisoned else f"task {n}"
        await store.append(TaskCreated(task_id=4 * n + n % 4, title=title))
    await redis_client.xadd(keys.partition_log(2), {"data": "not json"})

    first, second = Projector(redis_client, engine, keys), Projector(redis_client, engine, keys)
    await asyncio.gather(first.start(), second.start())
    await asyncio.gather(first.catch_up(), second.catch_up())

    assert await first.catch_up() == 0  # nothing was left behind
    parked = await list_parked(engine)
    assert sorted(p.task_id for p in parked if p.task_id is not None) == [
        4 * n + n % 4 for n in sorted(poisoned)
    ]
    assert len(parked) == len(poisoned) + 1  # and the entry that is no event
    assert len(await archived_ids(engine)) == 40 - len(poisoned)
    for n in range(40):
        activity = await list_activity(engine, 4 * n + n % 4)
        assert len(activity) == (0 if n in poisoned else 1)


async def test_parked_events_replay_after_the_fix_into_the_rows_a_rebuild_gives(
    redis_client: aioredis.Redis, keys: Keys, engine: AsyncEngine
) -> None:
    await refuse_poisoned_titles(engine)
    store = EventStore(redis_client, keys)
    await store.append(TaskCreated(task_id=1, title="neighbour"))
    created = await store.append(TaskCreated(task_id=5, title=f"a {POISON} pill"))
    for event in (
        RunRequested(task_id=5, run_id="r5", query="why"),
        RunStarted(task_id=5, run_id="r5"),
        RunRequested(task_id=1, run_id="r1"),
        RunCompleted(task_id=5, run_id="r5", answer="because"),
    ):
        await store.append(event)
    projector = await project(redis_client, engine, keys)
    assert [p.log_id for p in await list_parked(engine)] == [created.log_id]
    assert await get_task(engine, 5) is None  # its later events found no task to move

    [still] = await replay_parked(engine)  # the rule still stands: it stays parked
    assert (still.log_id, still.replayed) == (created.log_id, False)
    assert "no_poison" in still.reason
    assert [p.reason for p in await list_parked(engine)] == [still.reason]

    await accept_poisoned_titles(engine)
    [outcome] = await replay_parked(engine)

    assert (outcome.log_id, outcome.task_id, outcome.replayed) == (created.log_id, 5, True)
    assert await list_parked(engine) == []
    task = await get_task(engine, 5)
    assert task is not None
    assert (task.title, task.status, task.runs, task.last_answer) == (
        f"a {POISON} pill",
        "done",
        1,
        "because",
    )
    assert [a.type for a in await list_activity(engine, 5)] == [
        "task.created",
        "run.requested",
        "run.started",
        "run.completed",
    ]
    live = await snapshot(engine)
    await rebuild_from_archive(engine)
    assert await snapshot(engine) == live
    # and the projector folds the task's next events on top
    await store.append(RunRequested(task_id=5, run_id="r6"))
    await projector.catch_up()
    task = await get_task(engine, 5)
    assert task is not None
    assert (task.status, task.runs) == ("queued", 2)


async def test_the_jobs_view_shows_parked_entries_with_their_reason(
    redis_url: str,
    database_url: str,
    redis_client: aioredis.Redis,
    keys: Keys,
    tmp_path: Path,
) -> None:
    engine = create_engine(Settings(data_dir=tmp_path, database_url=database_url).sqlalchemy_url)
    try:
        async with gateway(redis_url, database_url, keys, tmp_path) as client:
            entry_id = await redis_client.xadd(
                keys.partition_log(3), {"type": "task.created", "data": "{", "task": "3"}
            )
            await project(redis_client, engine, keys)
            body = (await client.get("/api/jobs")).json()
    finally:
        await engine.dispose()
    assert body["parked"]["count"] == 1
    [shown] = body["parked"]["entries"]
    assert (shown["partition"], shown["log_id"], shown["task_id"], shown["type"]) == (
        3,
        entry_id,
        3,
        "task.created",
    )
    assert shown["reason"].startswith("undecodable:")
    assert shown["parked"].endswith("+00:00")


async def test_a_replay_while_the_projector_folds_the_same_task_loses_no_update(
    redis_client: aioredis.Redis, keys: Keys, engine: AsyncEngine
) -> None:
    await refuse_poisoned_titles(engine)
    store = EventStore(redis_client, keys)
    created = await store.append(TaskCreated(task_id=5, title=f"{POISON} again"))
    await store.append(RunRequested(task_id=5, run_id="r0"))
    projector = await project(redis_client, engine, keys)
    assert [p.log_id for p in await list_parked(engine)] == [created.log_id]
    await accept_poisoned_titles(engine)
    stop = asyncio.Event()
    running = asyncio.create_task(projector.run(stop, block_ms=50))
    try:

        async def more_runs() -> None:
            for n in range(1, 30):
                await store.append(RunRequested(task_id=5, run_id=f"r{n}"))

        _, [outcome] = await asyncio.gather(more_runs(), replay_parked(engine))
        assert outcome.replayed

        async def runs_counted() -> int:
            task = await get_task(engine, 5)
            return -1 if task is None else task.runs

        await eventually(runs_counted, until=lambda runs: runs == 30, message="runs lost")
    finally:
        stop.set()
        await running
    live = await snapshot(engine)
    await rebuild_from_archive(engine)
    assert await snapshot(engine) == live
