"""The lock protocol between runners, against real Redis/Valkey and SQLite/PostgreSQL: a lease
names its holder, a reclaimed command never runs beside its live first runner, and a failure or
superseded report is written only by whoever still speaks for the run at its fence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from libs.commandside.claims import get_claim, start_claim
from libs.commandside.locks import Holder, Lease, TaskLocks
from libs.events import EventStore, Keys, LockNotHeld, RunAgent, RunFailed, RunStarted, encode
from services.runner import lifecycle
from services.runner.lifecycle import handle_run
from services.runner.main import build_consumer
from tests.eventually import eventually
from tests.integration.runnerkit import RunnerKit, runner_kit

TTL_MS = 3000
TASK = 7


@pytest.fixture
async def kit(
    redis_url: str,
    redis_client: aioredis.Redis,
    database_url: str,
    keys: Keys,
    tmp_path: Path,
) -> AsyncIterator[RunnerKit]:
    async with runner_kit(redis_url, database_url, keys, tmp_path, lock_ttl_ms=TTL_MS) as kit:
        yield kit


async def lapse(redis_client: aioredis.Redis, key: str) -> None:
    """Let the lease at `key` lapse now, as it does once its holder stops extending it."""
    await redis_client.pexpire(key, 1)
    await eventually(
        lambda: redis_client.exists(key), until=lambda n: n == 0, message=f"{key} never lapsed"
    )


async def dead_letter(kit: RunnerKit, command: RunAgent) -> None:
    """What the consumer does once the command has failed too many deliveries."""
    consumer = build_consumer(kit.deps("dead-letterer"))
    assert consumer.on_dead_letter is not None
    fields = {"type": "run", "data": encode(command).decode()}
    await consumer.on_dead_letter("1-0", fields, "consumer died or timed out on all 5 deliveries")


async def test_a_second_runner_cannot_take_over_the_lease_a_runner_holds(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    locks = TaskLocks(redis_client, keys)
    reservation = await locks.acquire(TASK, "run-a", TTL_MS)
    assert isinstance(reservation, Lease)

    first = await locks.take_over(TASK, "run-a", reservation.fence, TTL_MS)
    second = await locks.take_over(TASK, "run-a", reservation.fence, TTL_MS)  # a reclaim

    assert isinstance(first, Lease)
    assert first.fence == reservation.fence  # the reservation, adopted: no runner held it
    assert first.token != reservation.token
    assert isinstance(second, Holder), "the reclaiming runner took over a live runner's lease"
    assert (second.run_id, second.fence) == ("run-a", first.fence)


async def test_a_token_names_its_holder_and_is_never_reused(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    locks = TaskLocks(redis_client, keys)
    reservation = await locks.acquire(TASK, "run-a", TTL_MS)
    assert isinstance(reservation, Lease)
    assert reservation.token.startswith(f"run-a:{reservation.fence}:gateway:")
    first = await locks.take_over(TASK, "run-a", reservation.fence, TTL_MS, holder="host-1-a")
    assert isinstance(first, Lease)
    assert first.token.startswith(f"run-a:{first.fence}:host-1-a:")
    held = await locks.holder(TASK)
    assert held is not None
    assert (held.run_id, held.fence, held.holder) == ("run-a", first.fence, "host-1-a")
    with pytest.raises(ValueError, match="reservations"):
        await locks.take_over(TASK, "run-a", reservation.fence, TTL_MS, holder="gateway")


async def test_after_a_lease_lapses_a_new_runner_takes_a_new_fence_and_the_old_token_fails(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    locks, store = TaskLocks(redis_client, keys), EventStore(redis_client, keys)
    reservation = await locks.acquire(TASK, "run-a", TTL_MS)
    assert isinstance(reservation, Lease)
    stalled = await locks.take_over(TASK, "run-a", reservation.fence, TTL_MS, holder="a")
    assert isinstance(stalled, Lease)
    await lapse(redis_client, keys.task_lock(TASK))

    fresh = await locks.take_over(TASK, "run-a", reservation.fence, TTL_MS, holder="b")

    assert isinstance(fresh, Lease)
    assert fresh.reacquired
    assert fresh.fence > stalled.fence
    assert fresh.previous_fence == stalled.fence
    assert fresh.token != stalled.token
    assert not await locks.extend(stalled)
    late = RunStarted(task_id=TASK, run_id="run-a", fence=stalled.fence, worker="a")
    with pytest.raises(LockNotHeld):
        await store.append(late, lock_token=stalled.token)


async def test_two_deliveries_of_one_run_never_run_it_at_once(kit: RunnerKit) -> None:
    command = await kit.admit(TASK, hold_seconds=1.0)
    first = asyncio.create_task(handle_run(command, kit.deps("runner-a")))
    await kit.wait_for(TASK, "run.started")

    # the command, reclaimed while runner-a works, delivered to runner-b
    second = await asyncio.gather(handle_run(command, kit.deps("runner-b")), return_exceptions=True)
    await first

    types = await kit.types(TASK)
    assert types.count("run.started") == 1
    assert types.count("run.completed") == 1
    assert "run.superseded" not in types  # nor was the live run declared superseded
    assert isinstance(second[0], lifecycle.RunHeldElsewhere)  # left pending, retried later
    claim = await get_claim(kit.engine, TASK)
    assert claim is not None
    assert claim.state == "done"


async def test_a_dead_letter_while_the_run_is_live_elsewhere_writes_nothing(
    kit: RunnerKit,
) -> None:
    command = await kit.admit(TASK, hold_seconds=1.0)
    running = asyncio.create_task(handle_run(command, kit.deps("runner-a")))
    await kit.wait_for(TASK, "run.started")

    await dead_letter(kit, command)

    claim = await get_claim(kit.engine, TASK)
    assert claim is not None
    assert claim.state == "running"
    await running
    types = await kit.types(TASK)
    assert "run.failed" not in types
    assert types.count("run.completed") == 1


async def test_a_dead_lettered_run_whose_runner_died_fails_at_its_newest_fence(
    kit: RunnerKit, redis_client: aioredis.Redis, keys: Keys
) -> None:
    command = await kit.admit(TASK)
    locks = TaskLocks(redis_client, keys)
    await lapse(redis_client, keys.task_lock(TASK))  # the reservation lapsed while queued
    died = await locks.take_over(TASK, command.run_id, command.fence, TTL_MS, holder="doomed")
    assert isinstance(died, Lease)
    assert await start_claim(kit.engine, TASK, command.run_id, died.fence, TTL_MS / 1000)
    await lapse(redis_client, keys.task_lock(TASK))  # ... and its runner died

    await dead_letter(kit, command)

    [failed] = [e for e in await kit.events(TASK) if isinstance(e, RunFailed)]
    assert failed.fence == died.fence > command.fence
    assert "gave up after repeated failures" in failed.reason
    claim = await get_claim(kit.engine, TASK)
    assert claim is not None
    assert claim.state == "failed"
    assert not await redis_client.exists(keys.task_lock(TASK))
    assert await kit.store.run_outcome(TASK, command.run_id) == "run.failed"


async def test_a_dead_letter_of_a_run_no_runner_started_frees_the_task_at_once(
    kit: RunnerKit, redis_client: aioredis.Redis, keys: Keys
) -> None:
    command = await kit.admit(TASK)

    await dead_letter(kit, command)

    assert "run.failed" in await kit.types(TASK)
    assert not await redis_client.exists(keys.task_lock(TASK))  # the reservation went with it
    claim = await get_claim(kit.engine, TASK)
    assert claim is not None
    assert claim.state == "failed"
    await handle_run(command, kit.deps("late-runner"))  # a late delivery: skipped
    assert "run.started" not in await kit.types(TASK)


async def test_a_lost_lease_report_of_an_older_holder_of_the_run_is_dropped(
    kit: RunnerKit, redis_client: aioredis.Redis, keys: Keys
) -> None:
    command = await kit.admit(TASK, hold_seconds=5.0)
    stalled = asyncio.create_task(handle_run(command, kit.deps("runner-a")))
    await kit.wait_for(TASK, "run.started")

    # runner-a stalls past its lease, and the reclaimed command is taken over by runner-b
    await lapse(redis_client, keys.task_lock(TASK))
    newer = await TaskLocks(redis_client, keys).take_over(
        TASK, command.run_id, command.fence, TTL_MS
    )
    assert isinstance(newer, Lease)
    assert newer.fence > command.fence
    await stalled  # runner-a finds its lease gone, and stops

    types = await kit.types(TASK)
    assert "lock.lost" not in types
    assert "run.superseded" not in types  # the run is runner-b's now, not over
    assert "run.completed" not in types
    claim = await get_claim(kit.engine, TASK)
    assert claim is not None
    assert claim.state == "running"
    assert await redis_client.get(keys.task_lock(TASK)) == newer.token


async def test_the_report_fence_check_lets_only_whoever_speaks_for_the_run_write(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    locks = TaskLocks(redis_client, keys)

    async def seize(run_id: str = "run-a", fence: int | None = None, own: str = "") -> str:
        slot = await locks.seize_for_report(
            TASK, run_id, fence=fence, fallback_fence=0, holder="rep", ttl_ms=TTL_MS, own_token=own
        )
        return slot.state

    reservation = await locks.acquire(TASK, "run-a", TTL_MS)
    assert isinstance(reservation, Lease)
    # the admission's reservation, never taken by a runner: seized at its fence, for the report
    slot = await locks.seize_for_report(
        TASK, "run-a", fence=None, fallback_fence=0, holder="rep", ttl_ms=TTL_MS
    )
    assert (slot.state, slot.fence) == ("seized", reservation.fence)
    assert slot.token.startswith(f"run-a:{reservation.fence}:rep:")
    assert await locks.release_token(TASK, slot.token)

    runner = await locks.take_over(TASK, "run-a", reservation.fence, TTL_MS, holder="a")
    assert isinstance(runner, Lease)
    assert await seize(fence=runner.fence, own=runner.token) == "held"  # its own live lease
    assert await seize() == "busy"  # a live holder of the run reports for itself
    assert await seize(fence=reservation.fence) == "newer"  # a stale delivery's older fence

    await lapse(redis_client, keys.task_lock(TASK))
    assert isinstance(await locks.acquire(TASK, "run-b", TTL_MS), Lease)
    assert await seize() == "other"  # another run has the task

    await redis_client.set(keys.run_outcome(TASK, "run-a"), "run.completed")
    assert await seize() == "ended"
