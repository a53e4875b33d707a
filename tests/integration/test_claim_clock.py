"""Run claims keep one clock, the database's, on SQLite and PostgreSQL: a gateway or runner
whose own clock is off by an hour neither takes a live claim nor writes one that looks expired.
The callers' clocks are skewed by patching `time.time` (the databases are real)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.commandside import claims
from libs.commandside.claims import (
    claim_task,
    fail_claim_of_run,
    get_claim,
    refresh_claim,
    start_claim,
)
from libs.common import Settings
from libs.common.database import create_engine, create_schema

HOUR_S = 3600.0


@pytest.fixture
async def engine(database_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(data_dir=tmp_path, database_url=database_url).sqlalchemy_url)
    await create_schema(engine)
    yield engine
    await engine.dispose()


def skew_clock(monkeypatch: pytest.MonkeyPatch, offset_s: float) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + offset_s)


async def test_a_claim_expires_at_the_database_clock_plus_its_ttl(engine: AsyncEngine) -> None:
    before = await claims.database_now(engine)
    assert await claim_task(engine, 1, "run-a", 1, ttl_s=60)
    after = await claims.database_now(engine)

    claim = await get_claim(engine, 1)
    assert claim is not None
    assert before + 60 - 0.01 <= claim.expires_at <= after + 60 + 0.01
    assert claim.is_live(after)
    assert abs(after - time.time()) < 5  # it is an epoch, like time.time()


async def test_a_gateway_whose_clock_runs_an_hour_fast_does_not_take_a_live_claim(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await claim_task(engine, 1, "run-a", 1, time.time() + 60)  # a gateway on time

    skew_clock(monkeypatch, HOUR_S)  # another gateway, an hour fast, the old call form
    assert not await claim_task(engine, 1, "run-b", 2, time.time() + 600)

    claim = await get_claim(engine, 1)
    assert claim is not None
    assert (claim.run_id, claim.state) == ("run-a", "queued")


async def test_a_runner_whose_clock_runs_an_hour_slow_keeps_its_claim_live(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await claim_task(engine, 1, "run-a", 1, time.time() + 600)

    skew_clock(monkeypatch, -HOUR_S)  # the runner, an hour slow
    assert await start_claim(engine, 1, "run-a", 1, 30.0)
    assert await refresh_claim(engine, 1, 1, 30.0)
    monkeypatch.undo()

    assert not await claim_task(engine, 1, "run-b", 2, time.time() + 600)  # a gateway on time
    claim = await get_claim(engine, 1)
    assert claim is not None
    assert (claim.run_id, claim.state) == ("run-a", "running")
    assert claim.expires_at > await claims.database_now(engine) + 25


async def test_an_expired_claim_is_taken_by_the_database_clock(engine: AsyncEngine) -> None:
    assert await claim_task(engine, 1, "run-a", 1, ttl_s=-1)
    assert await claim_task(engine, 1, "run-b", 2, ttl_s=60)
    claim = await get_claim(engine, 1)
    assert claim is not None
    assert claim.run_id == "run-b"


async def test_failing_a_claim_is_fenced(engine: AsyncEngine) -> None:
    assert await claim_task(engine, 1, "run-a", 5, ttl_s=60)

    assert not await fail_claim_of_run(engine, 1, "run-a", 4)  # a newer holder has the run
    assert not await fail_claim_of_run(engine, 1, "run-b", 9)  # another run's report
    claim = await get_claim(engine, 1)
    assert claim is not None
    assert claim.state == "queued"
    assert await fail_claim_of_run(engine, 1, "run-a", 5)
    claim = await get_claim(engine, 1)
    assert claim is not None
    assert claim.state == "failed"
