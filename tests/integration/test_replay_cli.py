"""`ragpoc events` / `ragpoc state` against a real Valkey/Redis: a recorded workload is printed
in order, as JSON lines that round-trip, bounded by entry id or time, followed live, and folded
back into the task's state at any entry (time travel)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from libs.events import (
    AnyEvent,
    EventStore,
    Keys,
    LlmDelta,
    RunCompleted,
    RunRequested,
    RunStarted,
    TaskCreated,
    decode_event,
    event_to_builtins,
)
from services.cli import main
from tests.eventually import eventually
from tests.redisclock import until_redis_clock_passes

RUN = "a1b2c3d4e5f6a7b8"
TASK = 7


def workload(task_id: int = TASK, run_id: str = RUN) -> list[AnyEvent]:
    return [
        TaskCreated(task_id=task_id, title="Why is the sky blue?"),
        RunRequested(task_id=task_id, run_id=run_id, query="sky colour", fence=1),
        RunStarted(task_id=task_id, run_id=run_id, worker="w1", fence=1),
        LlmDelta(task_id=task_id, run_id=run_id, index=0, text="Rayleigh "),
        LlmDelta(task_id=task_id, run_id=run_id, index=1, text="scattering"),
        RunCompleted(task_id=task_id, run_id=run_id, answer="Rayleigh scattering", fence=1),
    ]


async def record(client: aioredis.Redis, keys: Keys, events: list[AnyEvent]) -> list[str]:
    """Append `events`; returns their ids in the task streams."""
    store = EventStore(client, keys)
    return [(await store.append(event)).stream_id for event in events]


@pytest.fixture
def env(cli_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # no archive: these tests' task ids must not meet another stack's archived events
    cli_env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'no-archive.db'}")


async def run_cli(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


def iso_of(entry_id: str) -> str:
    ms = int(entry_id.split("-")[0])
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@pytest.mark.usefixtures("env")
async def test_events_prints_the_task_log_in_order(
    redis_client: aioredis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await record(redis_client, keys, workload())

    code = await run_cli(["events", str(TASK)])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line.split()[0] for line in lines] == ids
    assert [line.split()[2] for line in lines] == [
        "task.created",
        "run.requested",
        "run.started",
        "llm.delta",
        "llm.delta",
        "run.completed",
    ]
    assert lines[0].split()[3] == "-"  # no run
    assert lines[0].endswith("Task created: Why is the sky blue?")
    assert f"{RUN[:8]}  Run {RUN[:8]} requested: sky colour" in lines[1]
    assert lines[3].endswith('delta #0 "Rayleigh "')
    assert lines[5].endswith(f"Run {RUN[:8]} completed: Rayleigh scattering")
    assert RUN not in "".join(lines)  # run ids are shortened


@pytest.mark.usefixtures("env")
async def test_events_json_lines_round_trip(
    redis_client: aioredis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    events = workload()
    ids = await record(redis_client, keys, events)

    code = await run_cli(["events", str(TASK), "--json"])

    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [o["id"] for o in objects] == ids
    for obj, event in zip(objects, events, strict=True):
        assert obj == {"id": obj["id"], **event_to_builtins(event)}
        body = {k: v for k, v in obj.items() if k != "id"}
        assert decode_event(json.dumps(body)) == event


@pytest.mark.usefixtures("env")
async def test_since_and_until_bound_by_entry_id_and_by_time(
    redis_client: aioredis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await record(redis_client, keys, workload())

    by_id = await run_cli(["events", str(TASK), "--since", ids[1], "--until", ids[3], "--json"])
    chosen = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    since_time = await run_cli(["events", str(TASK), "--since", iso_of(ids[2]), "--json"])
    after_time = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    until_ms = await run_cli(["events", str(TASK), "--until", ids[0].split("-")[0], "--json"])
    before_ms = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]

    assert (by_id, since_time, until_ms) == (0, 0, 0)
    assert chosen == ids[1:4]  # both bounds inclusive
    assert after_time == [i for i in ids if i.split("-")[0] >= ids[2].split("-")[0]]
    assert ids[2] in after_time
    assert before_ms == [i for i in ids if i.split("-")[0] == ids[0].split("-")[0]]


@pytest.mark.usefixtures("env")
async def test_state_at_an_entry_is_the_state_the_projection_saw_then(
    redis_client: aioredis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await record(redis_client, keys, workload())

    then = await run_cli(["state", str(TASK), "--at", ids[3]])
    then_out = capsys.readouterr().out
    now = await run_cli(["state", str(TASK)])
    now_out = capsys.readouterr().out
    as_json = await run_cli(["state", str(TASK), "--at", ids[3], "--json"])
    snapshot = json.loads(capsys.readouterr().out)

    assert (then, now, as_json) == (0, 0, 0)
    assert "task 7: Why is the sky blue?" in then_out
    assert "status:      running" in then_out
    assert f"as of entry {ids[3]} (4 of 6 events)" in then_out
    assert f"run {RUN[:8]}  running" in then_out
    assert "Rayleigh scattering" not in then_out
    assert "status:      done" in now_out
    assert f"run {RUN[:8]}  done" in now_out
    assert 'answer: "Rayleigh scattering"' in now_out
    assert snapshot["at"] == ids[3]
    assert (snapshot["events"], snapshot["total_events"]) == (4, 6)
    assert snapshot["task"]["status"] == "running"
    assert snapshot["task"]["runs"] == 1
    assert [(r["run_id"], r["status"]) for r in snapshot["runs"]] == [(RUN, "running")]


@pytest.mark.usefixtures("env")
async def test_unknown_task_is_an_error(
    redis_client: aioredis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    await record(redis_client, keys, workload())

    state = await run_cli(["state", "999"])
    events = await run_cli(["events", "999"])
    before = await run_cli(["state", str(TASK), "--at", "1"])

    err = capsys.readouterr().err
    assert (state, events, before) == (1, 1, 1)
    assert "task 999 has no events" in err
    assert f"task {TASK} did not exist at 1" in err


async def test_missing_redis_url_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)

    assert main(["events", "1"]) == 2
    assert main(["state", "1"]) == 2
    assert "REDIS_URL is not set" in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["events", "--since", "yesterday"],
        ["events", "1", "--follow", "--until", "5"],
        ["state"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    assert "neither an entry id" in capsys.readouterr().err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("events", "state"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert f"usage: ragpoc {command}" in out
        assert "examples:" in out


@pytest.mark.usefixtures("env")
async def test_events_without_a_task_merges_every_partition(
    redis_client: aioredis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = workload(5, "run55555aaaa"), workload(6, "run66666bbbb")
    interleaved = [event for pair in zip(first, second, strict=True) for event in pair]
    for event in interleaved:  # ids of different streams tie within one ms: one ms each
        await record(redis_client, keys, [event])
        await until_redis_clock_passes(redis_client)

    code = await run_cli(["events"])
    lines = capsys.readouterr().out.splitlines()
    limited = await run_cli(["events", "--limit", "3", "--json"])
    newest = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert (code, limited) == (0, 0)
    assert [line.split()[3] for line in lines] == [str(e.task_id) for e in interleaved]
    assert [line.split()[4] for line in lines] == [tag(e) for e in interleaved]
    assert [(o["task_id"], o["type"]) for o in newest] == [
        (6, "llm.delta"),
        (5, "run.completed"),
        (6, "run.completed"),
    ]


def tag(event: AnyEvent) -> str:
    return str(type(event).__struct_config__.tag)


async def until_following(capsys: pytest.CaptureFixture[str]) -> str:
    """Wait for `ragpoc events --follow` to say it is tailing; what it printed before that."""
    out = ""

    def following() -> bool:
        nonlocal out
        captured = capsys.readouterr()
        out += captured.out
        return "following" in captured.err

    await eventually(following, message="ragpoc events --follow never started following")
    return out


@pytest.mark.usefixtures("env")
async def test_follow_prints_history_then_new_events_of_the_task(
    redis_client: aioredis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    events = workload()
    await record(redis_client, keys, events[:2])
    await record(redis_client, keys, [TaskCreated(task_id=TASK + 1, title="another task")])

    follower = asyncio.create_task(
        run_cli(["events", str(TASK), "--follow", "--json", "--max-events", "6"])
    )
    history = await until_following(capsys)
    ids = await record(redis_client, keys, events[2:])
    code = await asyncio.wait_for(follower, timeout=20)

    objects = [json.loads(line) for line in (history + capsys.readouterr().out).splitlines()]
    assert code == 0
    assert [o["type"] for o in objects] == [
        "task.created",
        "run.requested",
        "run.started",
        "llm.delta",
        "llm.delta",
        "run.completed",
    ]
    assert [o["id"] for o in objects[2:]] == ids
    assert {o["task_id"] for o in objects} == {TASK}


@pytest.mark.usefixtures("env")
async def test_follow_without_a_task_tails_every_partition_live(
    redis_client: aioredis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    await record(redis_client, keys, [TaskCreated(task_id=1, title="old")])

    follower = asyncio.create_task(
        run_cli(["events", "--follow", "--limit", "0", "--max-events", "3"])
    )
    history = await until_following(capsys)
    for event in (
        TaskCreated(task_id=2, title="two"),
        TaskCreated(task_id=3, title="three"),
        RunRequested(task_id=2, run_id="run22222xxxx"),
    ):  # ids of different streams tie within one ms: one ms each
        await record(redis_client, keys, [event])
        await until_redis_clock_passes(redis_client)
    code = await asyncio.wait_for(follower, timeout=20)

    lines = (history + capsys.readouterr().out).splitlines()
    assert code == 0
    assert [line.split()[3] for line in lines] == ["2", "3", "2"]
    assert "Task created: two" in lines[0]
    assert "Run run22222 requested" in lines[2]
    assert "old" not in "".join(lines)
