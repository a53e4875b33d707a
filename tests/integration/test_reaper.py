"""A run abandoned in the queue (its admission cut short after `run.requested`, or no runner in
time) is ended by the runners' reaper once its queue timeout has passed: the claim is failed, the
run gets exactly one `run.failed`, and a runner that gets its command later neither starts it
nor ends it again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.commandside.claims import expired_queued_claims, get_claim
from libs.events import Keys, RunFailed
from services.runner.lifecycle import handle_run
from services.runner.reaper import reap_abandoned_runs
from tests.eventually import eventually
from tests.integration.runnerkit import RunnerKit, runner_kit

TASK = 4
TERMINAL = ("run.completed", "run.failed", "run.superseded")


@pytest.fixture
async def kit(
    redis_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> AsyncIterator[RunnerKit]:
    async with runner_kit(
        redis_url, database_url, keys, tmp_path, lock_ttl_ms=3000, queue_timeout_s=1.0
    ) as kit:
        yield kit


async def until_abandoned(kit: RunnerKit) -> None:
    """Until the task's queued claim is past its queue timeout."""
    await eventually(lambda: expired_queued_claims(kit.engine, limit=10), until=bool, within=10)


async def test_a_run_abandoned_in_the_queue_is_ended_once_by_the_reaper(kit: RunnerKit) -> None:
    command = await kit.admit(TASK)  # its command never reaches a runner in time
    assert await reap_abandoned_runs(kit.deps("reaper")) == 0  # within its queue timeout
    await until_abandoned(kit)

    assert await reap_abandoned_runs(kit.deps("reaper")) == 1

    [failed] = [e for e in await kit.events(TASK) if isinstance(e, RunFailed)]
    assert failed.run_id == command.run_id
    assert "abandoned" in failed.reason
    claim = await get_claim(kit.engine, TASK)
    assert claim is not None
    assert claim.state == "failed"
    assert await reap_abandoned_runs(kit.deps("another-reaper")) == 0
    await handle_run(command, kit.deps("late-runner"))  # its command comes after all
    types = await kit.types(TASK)
    assert "run.started" not in types
    assert sum(t in TERMINAL for t in types) == 1


async def test_a_runner_never_starts_a_run_past_its_queue_timeout(kit: RunnerKit) -> None:
    command = await kit.admit(TASK)
    await until_abandoned(kit)

    await handle_run(command, kit.deps("late-runner"))

    types = await kit.types(TASK)
    assert "run.started" not in types
    assert sum(t in TERMINAL for t in types) == 1  # it ended once, and the reaper has nothing
    assert await reap_abandoned_runs(kit.deps("reaper")) == 0
