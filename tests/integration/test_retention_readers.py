"""After a trim of the Redis streams, every reader of history (task SSE, the all-tasks SSE, the
lock history, `ragpoc events`, `ragpoc state`) gives the same answer as before it: what Redis
no longer holds comes from the SQL archive."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.database import create_engine
from libs.events import (
    Keys,
)
from libs.events.ids import entry_key
from libs.events.retention import Trimmer
from libs.events.store import last_generated_id
from libs.readmodels import load_positions
from libs.readmodels.archive import SqlArchive
from services.cli import main
from tests.eventually import eventually
from tests.integration.inprocess import InProcessStack, in_process_stack
from tests.integration.retention_support import (
    run_in_thread,
)
from tests.integration.test_rebuild import workload
from tests.redisclock import until_redis_clock_passes
from tests.sse_client import sse_frames


async def until_everything_is_projected(stack: InProcessStack, engine: AsyncEngine) -> None:
    """Until every partition's position is its log's last id, twice in a row."""

    keys, redis = stack.store.keys, stack.store.redis
    settled = 0

    async def caught_up_twice() -> bool:
        nonlocal settled
        positions = await load_positions(engine)
        tails = [await last_generated_id(redis, log) for log in keys.partition_logs()]
        projected = [positions.get(p, "0-0") for p in range(keys.partitions)]
        settled = settled + 1 if tails == projected else 0
        return settled == 2

    await eventually(
        caught_up_twice, within=60, interval=0.2, message="the projector did not catch up"
    )


async def readers(
    stack: InProcessStack,
    task_ids: list[int],
    sizes: dict[int, int],
    since: str,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, Any]:
    """What every reader of history says: task SSE (whole and resumed), the all-tasks SSE
    (from the start and resumed), the lock history, `ragpoc events` and `ragpoc state`."""

    client = stack.client
    total = sum(sizes.values())
    seen: dict[str, Any] = {}
    for task_id in task_ids:
        url = f"/events/tasks/{task_id}"
        whole = await asyncio.wait_for(sse_frames(client, url, count=sizes[task_id]), 15)
        rest = await asyncio.wait_for(
            sse_frames(client, url, count=sizes[task_id] - 3, last_id=whole[2]["id"]), 15
        )
        seen[f"sse {task_id}"] = whole
        seen[f"sse {task_id} resumed"] = rest
        locks = await client.get(f"/api/tasks/{task_id}/locks", params={"limit": 5000})
        seen[f"locks {task_id}"] = locks.json()
        seen[f"locks {task_id} limit 3"] = (
            await client.get(f"/api/tasks/{task_id}/locks", params={"limit": 3})
        ).json()
    feed = await asyncio.wait_for(sse_frames(client, "/events?from=start", count=total), 15)
    seen["all"] = feed
    seen["all resumed"] = await asyncio.wait_for(
        sse_frames(client, "/events", count=total - total // 2, last_id=feed[total // 2 - 1]["id"]),
        15,
    )
    commands = [
        *(["events", str(t), "--json"] for t in task_ids),
        ["events", "--json"],
        ["events", "--json", "--limit", "7"],
        ["events", "--json", "--since", since, "--limit", "9"],
        *(["state", str(t), "--json"] for t in task_ids),
    ]
    for argv in commands:
        capsys.readouterr()
        code = await run_in_thread(main, argv)
        assert code == 0, argv
        out = capsys.readouterr().out.splitlines()  # JSON lines (not the stack's log lines)
        seen[" ".join(argv)] = [line for line in out if line.startswith("{")]
    return seen


async def test_every_reader_gives_the_same_history_after_a_trim(
    redis_url: str,
    database_url: str,
    keys: Keys,
    tmp_path: Path,
    cli_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_env.setenv("DATABASE_URL", database_url)
    async with in_process_stack(redis_url, database_url, keys, str(tmp_path), dev=True) as stack:
        store, redis = stack.store, stack.store.redis
        await workload(stack)
        engine = create_engine(stack.settings.sqlalchemy_url)
        try:
            await until_everything_is_projected(stack, engine)
            task_ids = [t["id"] for t in (await stack.client.get("/api/tasks")).json()["tasks"]]
            sizes = {t: len(await store.task_events(t)) for t in task_ids}
            total = sum(sizes.values())
            tails = [await last_generated_id(redis, log) for log in keys.partition_logs()]
            logged = [e for p in range(keys.partitions) for e in await store.log_range(p, "-", "+")]
            log_ids = sorted((e.entry_id for e in logged), key=entry_key)
            since = log_ids[len(log_ids) // 3]
            before = await readers(stack, task_ids, sizes, since, capsys)
            await until_redis_clock_passes(redis)

            report = await Trimmer(redis, keys, SqlArchive(engine), retention_s=0).run_once()

            counts = report.counts()
            assert counts["partition_entries"] == counts["task_entries"] == total
            assert counts["task_streams_emptied"] == len(task_ids) == 4
            for task_id in task_ids:  # emptied by XTRIM, not deleted
                assert await redis.xlen(keys.task_events(task_id)) == 0
                assert await redis.exists(keys.task_events(task_id)) == 1
            positions = await load_positions(engine)
            for p, log in enumerate(keys.partition_logs()):
                assert await redis.xlen(log) == 0  # all of it was at or below the position
                assert await last_generated_id(redis, log) == tails[p]
                assert positions.get(p, "0-0") == tails[p]
            for stream in keys.run_command_streams():  # every command was acked
                assert await redis.xlen(stream) == 0

            after = await readers(stack, task_ids, sizes, since, capsys)
            assert after == before
            # what was compared is the whole history
            assert len(before["all"]) == total
            assert len(before["events --json"]) == total
            assert [json.loads(line)["id"] for line in before["events --json --limit 7"]] == (
                log_ids[-7:]
            )
            assert [
                json.loads(line)["id"]
                for line in before["events --json --since " + since + " --limit 9"]
            ] == log_ids[len(log_ids) // 3 :][:9]
            for task_id in task_ids:
                assert len(before[f"events {task_id} --json"]) == sizes[task_id]
                state = json.loads(before[f"state {task_id} --json"][0])
                projected = (await stack.client.get(f"/api/tasks/{task_id}")).json()
                assert state["task"]["status"] == projected["status"]
                assert state["total_events"] == sizes[task_id]
                locks = before[f"locks {task_id}"]["locks"]
                assert locks[0]["type"] == "lock.released"
                assert before[f"locks {task_id} limit 3"]["locks"] == locks[:3]
            conflicts = [
                lock
                for t in task_ids
                for lock in before[f"locks {t}"]["locks"]
                if lock["type"] == "lock.conflict"
            ]
            assert len(conflicts) == 3

            # a client without a position starts at the live tail of the emptied logs, not
            # at the start of the archive
            connected = asyncio.Event()
            live = asyncio.create_task(
                sse_frames(stack.client, "/events", count=1, connected=connected)
            )
            await asyncio.wait_for(connected.wait(), timeout=10)
            created = await stack.client.post("/api/tasks", json={"title": "after the trim"})
            [frame] = await asyncio.wait_for(live, timeout=10)
            position, event_type = frame["id"], frame["event"]
            new_partition = keys.partition_of(created.json()["id"])
            parts = dict(part.split("=") for part in position.split(","))
            assert event_type == "task.created"
            assert entry_key(parts.pop(str(new_partition))) > entry_key(tails[new_partition])
            assert parts == {str(p): tail for p, tail in enumerate(tails) if p != new_partition}
        finally:
            await engine.dispose()
