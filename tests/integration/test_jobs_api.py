"""`GET /api/jobs` against a real gateway, Redis/Valkey and SQL database: live workers with their
entry in hand, pending entries on a dead consumer, dead letters, failed runs, and why queued runs
wait; for the runners, summed and merged over every partition's run-command stream (and the
pre-partition stream while it exists)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from libs.commandside.locks import TaskLocks
from libs.common import Settings
from libs.common.database import create_engine
from libs.events import INGESTORS_GROUP, RUNNERS_GROUP, Keys
from libs.events.codec import encode
from libs.events.commands import RunAgent
from libs.events.consumer import ConsumerOptions, GroupConsumer
from libs.readmodels.schema import runs
from services.gateway import jobs_api
from tests.integration.jobs_support import JobsView, SlowRunner, gateway


@pytest.fixture
async def view(
    redis_url: str, database_url: str, redis_client: aioredis.Redis, keys: Keys, tmp_path: Path
) -> AsyncIterator[JobsView]:
    engine = create_engine(Settings(data_dir=tmp_path, database_url=database_url).sqlalchemy_url)
    try:
        async with gateway(redis_url, database_url, keys, tmp_path) as client:
            yield JobsView(client, redis_client, engine, keys)
    finally:
        await engine.dispose()


@pytest.fixture
async def runner(view: JobsView) -> AsyncIterator[SlowRunner]:
    slow = SlowRunner(view)
    await slow.consumer.ensure_group()
    try:
        yield slow
    finally:
        slow.release.set()
        slow.stop.set()
        if slow.task is not None:
            await slow.task


def reason_of(body: dict[str, Any], run_id: str) -> str:
    reasons = [w["reason"] for w in body["waiting"] if w["run_id"] == run_id]
    assert reasons, body["waiting"]
    reason: str = reasons[0]
    return reason


async def queue_on_a_dead_consumer(
    view: JobsView, task_id: int, run_id: str, entry_id: str = "*"
) -> str:
    """A queued run whose command a consumer read and never acked: it died with it in hand."""
    entry_id = await view.queue_run(task_id, run_id, entry_id)
    stream = view.keys.run_commands_of(task_id)
    await view.redis.xreadgroup(RUNNERS_GROUP, "dead-runner", {stream: ">"}, count=1)
    return entry_id


async def queue_behind_a_lock_and_behind_the_queue(view: JobsView) -> None:
    """run-locked, on a task another run's lock holds, then run-behind."""
    await TaskLocks(view.redis, view.keys).acquire(3, "other-run", ttl_ms=60_000)
    await view.queue_run(3, "run-locked")
    await view.queue_run(4, "run-behind")


async def test_before_any_stream_exists_the_view_shows_zeros_and_notes_not_an_error(
    view: JobsView,
) -> None:
    body = await view.get()
    runner = body["services"]["runner"]
    assert runner["streams"] == view.keys.run_command_streams()  # no pre-partition stream
    assert runner["group"] == RUNNERS_GROUP
    assert runner["workers"] == []
    assert runner["pending"] == []
    assert runner["lag"] == 0
    assert any("do not exist yet" in n for n in runner["notes"])
    assert body["services"]["ingestor"]["group"] == INGESTORS_GROUP


async def test_a_queued_run_without_a_live_runner_waits_for_one(
    view: JobsView, runner: SlowRunner
) -> None:
    await view.queue_run(1, "run-nolive")  # the runners' group exists; its runner never started
    body = await view.get()
    assert reason_of(body, "run-nolive") == "no live consumer in group runners"
    assert body["services"]["runner"]["lag"] == 1


async def test_an_entry_read_and_never_acked_is_pending_on_a_dead_consumer(
    view: JobsView, runner: SlowRunner
) -> None:
    await queue_on_a_dead_consumer(view, 1, "run-nolive")
    body = await view.once(lambda b: b["services"]["runner"]["pending"])
    [pending] = body["services"]["runner"]["pending"]
    assert pending["consumer"] == "dead-runner"
    assert pending["stream"] == view.keys.run_commands_of(1)
    assert pending["deliveries"] == 1
    assert pending["idle_ms"] >= 0
    assert pending["consumer_live"] is False
    assert reason_of(body, "run-nolive") == "pending on dead consumer dead-runner"


async def test_a_live_runner_heartbeats_the_entry_in_its_hand(
    view: JobsView, runner: SlowRunner
) -> None:
    await queue_on_a_dead_consumer(view, 1, "run-nolive")
    busy_entry, body = await runner.busy_with(2, "run-busy")
    [worker] = body["services"]["runner"]["workers"]
    assert worker["id"] == "live-runner"
    assert worker["service"] == "runner"
    assert worker["current_entry"] == busy_entry
    assert worker["pid"] > 0
    assert worker["host"]
    assert worker["started_at"] <= worker["seen_at"]
    live_pending = [p for p in body["services"]["runner"]["pending"] if p["id"] == busy_entry]
    assert live_pending
    assert live_pending[0]["consumer_live"] is True
    # the live runner does not take over what the dead one left pending
    assert reason_of(body, "run-nolive") == "pending on dead consumer dead-runner"


async def test_a_run_waits_for_another_runs_lock_or_behind_the_busy_runners_queue(
    view: JobsView, runner: SlowRunner
) -> None:
    await runner.busy_with(2, "run-busy")
    await queue_behind_a_lock_and_behind_the_queue(view)
    body = await view.get()
    assert reason_of(body, "run-locked").startswith("held by lock other-run until ")
    assert reason_of(body, "run-behind") == "queued behind 2 commands"


async def test_dead_letters_show_their_reason_source_entry_and_deliveries(view: JobsView) -> None:
    async def boom(_entry_id: str, _fields: dict[str, str]) -> None:
        raise RuntimeError("boom")

    # one dead letter made by the consumer loop itself, on the ingestor's stream
    failing = GroupConsumer(
        redis=view.redis,
        keys=view.keys,
        stream=view.keys.ingest_commands,
        group=INGESTORS_GROUP,
        handler=boom,
        options=ConsumerOptions(block_ms=100, min_idle_ms=0, max_deliveries=1),
        name="failing-ingestor",
    )
    await failing.ensure_group()
    source = await view.redis.xadd(view.keys.ingest_commands, {"data": '{"type":"ingest"}'})
    await failing.process_once(block=False)
    await failing.process_once(block=False)
    # and one as a runner leaves it
    dead_run = RunAgent(task_id=9, run_id="run-dead", fence=1, question="q")
    await view.redis.xadd(
        view.keys.dead_letters(view.keys.run_commands_of(9)),
        {
            "data": encode(dead_run),
            "source_id": "1-0",
            "group": RUNNERS_GROUP,
            "deliveries": "5",
            "reason": "TimeoutError: llm",
        },
    )

    body = await view.get()
    [ingest_dead] = body["services"]["ingestor"]["dead_letters"]
    assert ingest_dead["reason"] == "RuntimeError: boom"
    assert ingest_dead["source_id"] == source
    assert ingest_dead["deliveries"] == 1
    assert body["services"]["ingestor"]["pending"] == []
    [run_dead] = body["services"]["runner"]["dead_letters"]
    assert run_dead["reason"] == "TimeoutError: llm"
    assert (run_dead["task_id"], run_dead["run_id"]) == (9, "run-dead")
    assert run_dead["stream"] == view.keys.run_commands_of(9)
    assert run_dead["deliveries"] == 5


async def test_failed_runs_are_listed_newest_first_and_completed_ones_left_out(
    view: JobsView,
) -> None:
    now = time.time()
    async with view.engine.begin() as conn:
        for run_id, status, finished in [
            ("r-old", "failed", now - 100),
            ("r-new", "superseded", now - 10),
            ("r-ok", "completed", now - 5),
        ]:
            await conn.execute(
                runs.insert().values(
                    run_id=run_id,
                    task_id=7,
                    status=status,
                    fence=1,
                    error=f"{status} error",
                    requested_at=finished - 1,
                    finished_at=finished,
                )
            )

    body = await view.get()
    assert [r["run_id"] for r in body["failed_runs"]] == ["r-new", "r-old"]
    assert body["failed_runs"][0]["error"] == "superseded error"


async def test_after_a_clean_shutdown_the_worker_is_gone_and_queued_runs_wait_for_a_live_one(
    view: JobsView, runner: SlowRunner
) -> None:
    await runner.busy_with(2, "run-busy")
    await queue_behind_a_lock_and_behind_the_queue(view)

    await runner.shut_down()

    body = await view.get()
    assert body["services"]["runner"]["workers"] == []
    assert "no live consumer in group runners" in body["services"]["runner"]["notes"]
    assert reason_of(body, "run-locked").startswith("held by lock other-run")
    # run-behind's command was never delivered: nobody is there to take it
    assert reason_of(body, "run-behind") == "no live consumer in group runners"


async def dead_letter(view: JobsView, task_id: int, reason: str, entry_id: str) -> str:
    """A runner's dead letter for a command of `task_id`, in its partition's dead letters (with
    an explicit id: entries of two streams can share a millisecond)."""
    command = RunAgent(task_id=task_id, run_id=f"run-{task_id}", fence=1, question="q")
    letter = {"data": encode(command), "source_id": "1-0", "deliveries": "5", "reason": reason}
    dead = view.keys.dead_letters(view.keys.run_commands_of(task_id))
    return str(await view.redis.xadd(dead, letter, id=entry_id))


async def test_runs_queued_pending_and_dead_in_different_partitions_are_all_reported(
    view: JobsView, runner: SlowRunner
) -> None:
    keys = view.keys
    assert {keys.partition_of(t) for t in (1, 2, 3, 4)} == {1, 2, 3, 0}  # four partitions
    await queue_on_a_dead_consumer(view, 1, "run-p1")
    await queue_on_a_dead_consumer(view, 2, "run-p2")
    await view.queue_run(3, "run-waits-p3")
    await view.queue_run(4, "run-waits-p0")
    older = await dead_letter(view, 5, "TimeoutError: p1", "1000-0")
    newer = await dead_letter(view, 6, "TimeoutError: p2", "2000-0")

    body = await view.get()
    runner_view = body["services"]["runner"]
    assert runner_view["lag"] == 2  # one undelivered command in each of two partitions
    assert runner_view["pending_count"] == 2
    pending = runner_view["pending"]
    assert [(p["stream"], p["consumer"]) for p in pending] == [
        (keys.run_commands_of(1), "dead-runner"),
        (keys.run_commands_of(2), "dead-runner"),
    ]  # oldest first, each from its own partition's stream
    # each pending entry was read back from its own stream to find its run
    assert reason_of(body, "run-p1") == "pending on dead consumer dead-runner"
    assert reason_of(body, "run-p2") == "pending on dead consumer dead-runner"
    assert reason_of(body, "run-waits-p3") == "no live consumer in group runners"
    dead = runner_view["dead_letters"]
    assert [(d["id"], d["stream"], d["task_id"]) for d in dead] == [
        (newer, keys.run_commands_of(6), 6),
        (older, keys.run_commands_of(5), 5),
    ]  # newest first over both partitions' dead letters


async def test_the_merged_pending_entries_and_dead_letters_stay_bounded_overall(
    view: JobsView, runner: SlowRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_api, "PENDING_LIMIT", 3)
    monkeypatch.setattr(jobs_api, "DEAD_LETTER_LIMIT", 2)
    queued = [
        (await queue_on_a_dead_consumer(view, task_id, f"run-{task_id}", f"{n}-0"), task_id)
        for n, task_id in enumerate((1, 2, 3, 5, 6), start=1000)  # partitions 1, 2, 3, 1, 2
    ]
    letters = [await dead_letter(view, t, "boom", f"{n}-0") for n, t in enumerate((1, 2, 3), 1)]

    runner_view = (await view.get())["services"]["runner"]
    assert runner_view["pending_count"] == 5  # the groups' own count, not the rows shown
    assert [(p["id"], p["stream"]) for p in runner_view["pending"]] == [
        (entry_id, view.keys.run_commands_of(task_id)) for entry_id, task_id in queued[:3]
    ]  # the three oldest over all partitions
    assert [d["id"] for d in runner_view["dead_letters"]] == letters[:0:-1]  # the 2 newest


async def test_a_pre_partition_run_stream_is_reported_while_it_exists(
    view: JobsView, runner: SlowRunner
) -> None:
    legacy = view.keys.legacy_run_commands
    await view.redis.xgroup_create(legacy, RUNNERS_GROUP, id="0", mkstream=True)
    command = RunAgent(task_id=1, run_id="run-old", fence=1, question="q")
    await view.redis.xadd(legacy, {"data": encode(command)})
    await view.queue_run(2, "run-new")
    await view.redis.xadd(view.keys.dead_letters(legacy), {"reason": "old", "source_id": "1-0"})

    runner_view = (await view.get())["services"]["runner"]
    assert runner_view["streams"] == [*view.keys.run_command_streams(), legacy]
    assert runner_view["lag"] == 2  # one command in the old stream, one in partition 2
    [old_letter] = runner_view["dead_letters"]
    assert (old_letter["stream"], old_letter["reason"]) == (legacy, "old")
    assert not any("not exist" in note for note in runner_view["notes"])

    await view.redis.delete(legacy)  # drained and removed after the upgrade
    runner_view = (await view.get())["services"]["runner"]
    assert runner_view["streams"] == view.keys.run_command_streams()
    assert runner_view["lag"] == 1
    assert len(runner_view["dead_letters"]) == 1  # its dead letters outlive it
