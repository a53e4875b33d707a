"""Trimming the Redis streams (retention) against a real Valkey/Redis and SQLite/PostgreSQL:
only what the archive holds, what no group still needs and what is old enough goes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from libs.common.database import create_engine, create_schema
from libs.events import (
    RUNNERS_GROUP,
    EventStore,
    Keys,
)
from libs.events.consumer import ConsumerOptions, GroupConsumer
from libs.events.ids import entry_key
from libs.events.retention import Trimmer
from libs.events.store import last_generated_id
from libs.readmodels import apply_batch
from libs.readmodels.archive import SqlArchive, partition_events, task_history
from libs.readmodels.schema import event_archive
from services.cli import main
from tests.eventually import eventually
from tests.integration.retention_support import (
    NoArchive,
    events_of,
    pairs,
    run_in_thread,
    trim_line,
)
from tests.redisclock import until_redis_clock_passes

# ---------------------------------------------------------------- command streams


async def test_pending_commands_survive_a_trim_and_stay_claimable(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    stream = keys.run_commands(0)
    await redis_client.xgroup_create(stream, RUNNERS_GROUP, id="0", mkstream=True)
    ids = [await redis_client.xadd(stream, {"type": "run", "data": f"c{n}"}) for n in range(6)]
    # a live consumer handles c0, c1; a consumer that dies takes c2; the live one handles c3
    for consumer, count, ack in (("live", 2, True), ("dead", 1, False), ("live", 1, True)):
        reply = await redis_client.xreadgroup(RUNNERS_GROUP, consumer, {stream: ">"}, count=count)
        if ack:
            await redis_client.xack(stream, RUNNERS_GROUP, *[i for i, _ in reply[0][1]])
    # the ingest stream: everything delivered and acked up to i1, nothing pending
    ingest = keys.ingest_commands
    await redis_client.xgroup_create(ingest, "ingestors", id="0", mkstream=True)
    ingest_ids = [await redis_client.xadd(ingest, {"n": str(n)}) for n in range(4)]
    reply = await redis_client.xreadgroup("ingestors", "i", {ingest: ">"}, count=2)
    await redis_client.xack(ingest, "ingestors", *[i for i, _ in reply[0][1]])
    dead = await redis_client.xadd(keys.dead_letters(stream), {"reason": "r"})
    await redis_client.xadd(keys.doc_events, {"type": "doc.ingested", "data": "{}"})
    await until_redis_clock_passes(redis_client)

    kept = await Trimmer(redis_client, keys, NoArchive(), retention_s=3600).run_once()
    assert sum(trim.removed for trim in kept.streams) == 0  # nothing is old enough yet
    report = await Trimmer(redis_client, keys, NoArchive(), retention_s=0).run_once()

    remaining = [i for i, _ in await redis_client.xrange(stream)]
    assert remaining == ids[2:]  # c0, c1 acked: gone; c2 pending: kept, and all after it
    assert [i for i, _ in await redis_client.xrange(ingest)] == ingest_ids[2:]  # undelivered
    assert [i for i, _ in await redis_client.xrange(keys.dead_letters(stream))] == [dead]
    assert await redis_client.xlen(keys.doc_events) == 0  # by age only
    assert report.counts()["command_entries"] == 4
    assert report.counts()["doc_entries"] == 1
    # the pending entry is still whole: another member reclaims and handles it
    handled: list[tuple[str, dict[str, str]]] = []

    async def handler(entry_id: str, fields: dict[str, str]) -> None:
        handled.append((entry_id, fields))

    rescuer = GroupConsumer(
        redis_client,
        keys,
        stream,
        RUNNERS_GROUP,
        handler,
        ConsumerOptions(block_ms=10, min_idle_ms=0),
        name="rescuer",
    )
    await rescuer.process_once(block=False)
    assert handled[0] == (ids[2], {"type": "run", "data": "c2"})
    pending = await redis_client.xpending(stream, RUNNERS_GROUP)
    assert pending["pending"] == 0


async def test_a_command_stream_without_a_group_is_kept_whole(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    ids = [await redis_client.xadd(keys.run_commands(0), {"n": str(n)}) for n in range(3)]
    await until_redis_clock_passes(redis_client)

    await Trimmer(redis_client, keys, NoArchive(), retention_s=0).run_once()

    assert [i for i, _ in await redis_client.xrange(keys.run_commands(0))] == ids


# ---------------------------------------------------------------- partition logs, task streams


async def test_only_archived_entries_leave_the_logs_and_task_streams(
    redis_client: aioredis.Redis,
    keys: Keys,
    database_url: str,
    cli_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:

    store = EventStore(redis_client, keys)
    engine = create_engine(database_url)
    await create_schema(engine)
    cli_env.setenv("DATABASE_URL", database_url)
    cli_env.setenv("RAGPOC_STREAM_RETENTION_S", "0")
    # tasks 1, 5 and 9 share partition 1 (of 4), task 2 is alone in partition 2; their events
    # interleave in the partition log
    p1 = [events_of(1, "run-one"), events_of(5, "run-five"), events_of(9, "run-nine")]
    for step in range(6):
        for events in p1:
            await store.append(events[step])
    for event in events_of(2, "run-two"):
        await store.append(event)
    legacy = await redis_client.zrem(keys.task_index(1), "9")  # as if appended before the index
    assert legacy == 1
    history = {t: pairs(await store.task_events(t)) for t in (1, 2, 5, 9)}
    log_one = await store.log_range(1, "-", "+")
    # the projector archived partition 2 and the first 8 entries of partition 1 (all of task
    # 9's first two steps, ...), not the rest
    await apply_batch(engine, 1, log_one[:8])
    await apply_batch(engine, 2, await store.log_range(2, "-", "+"))
    position = log_one[7].entry_id
    before_ids = {t: await last_generated_id(redis_client, keys.task_events(t)) for t in history}
    await until_redis_clock_passes(redis_client)

    dry = await run_in_thread(main, ["trim", "--dry-run"])
    dry_out = capsys.readouterr().out
    assert dry == 0
    assert trim_line("would trim", 8, keys.partition_log(1)) in dry_out
    assert trim_line("would trim", 6, keys.partition_log(2)) in dry_out
    assert trim_line("would trim", 2, keys.task_events(9)) in dry_out
    assert trim_line("would trim", 6, keys.task_events(2)) in dry_out
    assert f"kept            -  {keys.run_commands(0)}  (no consumer group yet" in dry_out
    assert "would trim 28 entries" in dry_out  # 8 + 6 from logs, 3 + 3 + 2 + 6 from tasks
    assert await redis_client.xlen(keys.partition_log(1)) == 18  # a dry run changes nothing
    assert await redis_client.xlen(keys.task_events(2)) == 6

    code = await run_in_thread(main, ["trim"])
    out = capsys.readouterr().out
    assert code == 0
    assert trim_line("trimmed", 8, keys.partition_log(1)) in out
    assert trim_line("trimmed", 6, keys.task_events(2)) in out
    assert ", now empty)" in out
    assert "trimmed 28 entries" in out

    # the logs keep exactly what lies above the projector's position
    assert [e.entry_id for e in await store.log_range(1, "-", "+")] == [
        e.entry_id for e in log_one[8:]
    ]
    left = await store.log_range(1, "-", "+")
    assert all(entry_key(e.entry_id) > entry_key(position) for e in left)
    assert await redis_client.xlen(keys.partition_log(2)) == 0
    # each task stream keeps what is not archived: 1, 5 and 9 had 3, 3, 2 steps archived
    remaining = {t: pairs(await store.task_events(t)) for t in history}
    assert remaining == {1: history[1][3:], 5: history[5][3:], 9: history[9][2:], 2: []}
    # an emptied stream still exists and knows its last id; it left the task index
    assert await redis_client.exists(keys.task_events(2)) == 1
    assert await last_generated_id(redis_client, keys.task_events(2)) == before_ids[2]
    assert await redis_client.zrange(keys.task_index(2), 0, -1) == []
    # the task that was never indexed was found through the log it left, and is indexed again,
    # scored by the ms of its oldest remaining entry
    index = dict(await redis_client.zrange(keys.task_index(1), 0, -1, withscores=True))
    assert set(index) == {"1", "5", "9"}
    assert index["9"] == int(remaining[9][0][0].split("-")[0])

    # readers get the whole history: the archive for what went, then Redis
    for task_id, full in history.items():
        assert pairs(await task_history(store, engine, task_id)) == full
        assert pairs(await task_history(store, engine, task_id, after=full[1][0])) == full[2:]
    assert await partition_events(store, engine, 1) == log_one
    assert await partition_events(store, engine, 1, limit=12, newest=True) == log_one[-12:]
    assert await partition_events(store, engine, 1, limit=4, newest=True) == log_one[-4:]
    assert await partition_events(store, engine, 1, limit=10) == log_one[:10]
    assert await partition_events(store, engine, 1, limit=5) == log_one[:5]

    # the Redis logs were trimmed: replaying them would replace the archive with less history
    refused = await run_in_thread(main, ["rebuild", "--from-streams"])
    assert refused == 1
    assert "were trimmed" in capsys.readouterr().err
    async with engine.connect() as conn:
        archived = await conn.execute(sa.select(sa.func.count()).select_from(event_archive))
        assert archived.scalar_one() == 14

    # once the rest is projected, the next pass empties everything
    await apply_batch(engine, 1, log_one[8:])
    await until_redis_clock_passes(redis_client)
    report = await Trimmer(redis_client, keys, SqlArchive(engine), retention_s=0).run_once()
    assert report.counts()["task_streams_emptied"] == 3
    assert await redis_client.xlen(keys.partition_log(1)) == 0
    assert await redis_client.zcard(keys.task_index(1)) == 0
    for task_id, full in history.items():
        assert await redis_client.xlen(keys.task_events(task_id)) == 0
        assert pairs(await task_history(store, engine, task_id)) == full
    await engine.dispose()


def test_trim_needs_redis_and_explains_itself(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:

    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["trim"]) == 2
    assert "REDIS_URL is not set" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["trim", "--help"])
    out = capsys.readouterr().out
    assert "usage: ragpoc trim [-h] [--dry-run]" in out
    assert "never MAXLEN" in out


async def test_the_projector_trims_every_interval_and_logs_each_pass(
    redis_client: aioredis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.projector import main as projector_main

    lines: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        def info(self, event: str, **fields: Any) -> None:
            lines.append((event, fields))

        def warning(self, event: str, **fields: Any) -> None:
            lines.append((event, fields))

    monkeypatch.setattr(projector_main, "log", Recorder())
    for n in range(3):
        await redis_client.xadd(keys.doc_events, {"n": str(n)})
    trimmer = Trimmer(redis_client, keys, NoArchive(), retention_s=0)
    stop = asyncio.Event()

    await projector_main.trim_loop(trimmer, 0, stop)  # 0: never
    assert lines == [("trim.disabled", {})]
    loop = asyncio.create_task(projector_main.trim_loop(trimmer, 0.05, stop))
    await eventually(
        lambda: any(event == "trim.pass" for event, _ in lines),
        message="the trim loop logged no pass",
    )
    stop.set()
    await asyncio.wait_for(loop, 5)

    passes = [fields for event, fields in lines if event == "trim.pass"]
    assert passes[0]["doc_entries"] == 3
    assert passes[0]["partition_entries"] == 0
    assert await redis_client.xlen(keys.doc_events) == 0


# ---------------------------------------------------------------- readers after a trim
