"""A run ends exactly once: its terminal event is refused a second time whoever writes it, a run
whose task another run took meanwhile still gets its end when its command finally comes, and a
command no runner can read is dead-lettered without taking the runner down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from libs.commandside.claims import cancel_queued_claim, get_claim
from libs.commandside.locks import TaskLocks
from libs.events import Keys, RunAlreadyEnded, RunCompleted, RunFailed, RunSuperseded
from services.runner.lifecycle import handle_run
from services.runner.main import build_consumer
from tests.eventually import eventually
from tests.integration.runnerkit import RunnerKit, runner_kit

TTL_MS = 3000
TASK = 9
TERMINAL = ("run.completed", "run.failed", "run.superseded")


@pytest.fixture
async def kit(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> AsyncIterator[RunnerKit]:
    async with runner_kit(redis_url, database_url, keys, tmp_path, lock_ttl_ms=TTL_MS) as kit:
        yield kit


async def lapse(redis_client: aioredis.Redis, key: str) -> None:
    await redis_client.pexpire(key, 1)
    await eventually(lambda: redis_client.exists(key), until=lambda n: n == 0)


async def terminal_events(kit: RunnerKit, run_id: str) -> list[str]:
    return [
        t
        for t, e in zip(await kit.types(TASK), await kit.events(TASK), strict=True)
        if t in TERMINAL and e.run_id == run_id
    ]


async def test_a_second_terminal_event_is_refused_with_or_without_the_lock(
    kit: RunnerKit, redis_client: aioredis.Redis, keys: Keys
) -> None:
    command = await kit.admit(TASK)
    holder = await TaskLocks(redis_client, keys).holder(TASK)
    assert holder is not None
    ids = {"task_id": TASK, "run_id": command.run_id, "fence": command.fence}
    token = str(await redis_client.get(keys.task_lock(TASK)))

    await kit.store.append_outcome(RunCompleted(**ids, answer="blue"), lock_token=token)  # type: ignore[arg-type]
    # a retry whose first reply was lost, and a late report holding no lock
    with pytest.raises(RunAlreadyEnded, match=r"run\.completed"):
        await kit.store.append_outcome(RunCompleted(**ids, answer="blue"), lock_token=token)  # type: ignore[arg-type]
    with pytest.raises(RunAlreadyEnded):
        await kit.store.append_outcome(RunFailed(**ids, reason="late"), lock_token=None)  # type: ignore[arg-type]

    assert await terminal_events(kit, command.run_id) == ["run.completed"]


async def test_a_run_whose_task_another_run_took_ends_superseded_when_its_command_comes(
    kit: RunnerKit, redis_client: aioredis.Redis, keys: Keys
) -> None:
    first = await kit.admit(TASK)
    # its admission was undone (or its claim expired) and its reservation lapsed: the task is
    # free, and a second run takes it, while the first run's command is still in the stream
    assert await cancel_queued_claim(kit.engine, TASK, first.run_id, first.fence)
    await lapse(redis_client, keys.task_lock(TASK))
    second = await kit.admit(TASK)

    await handle_run(first, kit.deps("late-runner"))

    assert await terminal_events(kit, first.run_id) == ["run.superseded"]
    [superseded] = [e for e in await kit.events(TASK) if isinstance(e, RunSuperseded)]
    assert f"run {second.run_id} claimed the task" in superseded.reason
    held = await TaskLocks(redis_client, keys).holder(TASK)
    assert held is not None
    assert held.run_id == second.run_id
    await handle_run(second, kit.deps("runner"))
    assert await terminal_events(kit, second.run_id) == ["run.completed"]
    claim = await get_claim(kit.engine, TASK)
    assert claim is not None
    assert claim.run_id == second.run_id
    assert claim.state == "done"
    # a second delivery of the first run's command changes nothing
    await handle_run(first, kit.deps("later-runner"))
    assert await terminal_events(kit, first.run_id) == ["run.superseded"]


async def test_a_run_command_no_runner_can_read_is_dead_lettered_and_the_runner_goes_on(
    kit: RunnerKit, keys: Keys
) -> None:
    consumer = build_consumer(kit.deps("runner"))
    assert consumer.on_dead_letter is not None
    # the hook has no run to fail: it returns (it used to raise, and the runner died)
    await consumer.on_dead_letter("1-0", {"type": "run", "data": "not a command"}, "bad")
    await consumer.on_dead_letter("2-0", {"type": "run"}, "no data at all")


async def test_a_failing_dead_letter_hook_does_not_end_the_consumer(
    kit: RunnerKit, redis_client: aioredis.Redis, keys: Keys
) -> None:
    consumer = build_consumer(kit.deps("runner"))

    async def broken_hook(entry_id: str, fields: dict[str, str], reason: str) -> None:
        raise ValueError("the hook is broken")

    consumer.on_dead_letter = broken_hook
    await consumer.ensure_group()
    entry_id = await redis_client.xadd(keys.run_commands(0), {"type": "run", "data": "x"})
    await redis_client.xreadgroup(consumer.group, "gone", {keys.run_commands(0): ">"})
    for _ in range(kit.settings.consumer_max_deliveries):  # deliveries to a consumer that died
        await redis_client.xclaim(keys.run_commands(0), consumer.group, "gone", 0, [entry_id])

    await consumer._dead_letter(
        keys.run_commands(0), entry_id, {"type": "run", "data": "x"}, 6
    )  # raises nothing

    letters = await redis_client.xrange(keys.dead_letters(keys.run_commands(0)))
    assert [fields["source_id"] for _id, fields in letters] == [entry_id]
