"""A short fault run in `make test`: one round of every fault kind, in a random order, against
`ragpoc up` plus a second runner and gateway, while clients ask for runs, follow them over SSE
and ingest documents; then every promise is checked (see `tests/faults/checker.py`). `make
chaos` runs the same for ten minutes. RAGPOC_CHAOS_SEED replays a failing run's faults."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest

from bench.chaos import render
from tests.conftest import DEFAULT_POSTGRES, unavailable
from tests.faults.chaos import chaos_run
from tests.faults.nemesis import FAULT_KINDS

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.postgres]


@pytest.mark.timeout(600)
async def test_every_promise_holds_through_one_round_of_every_fault(tmp_path: Path) -> None:
    base = os.environ.get("RAGPOC_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    try:
        psycopg.connect(base, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {base} does not answer: {exc}")
    seed = int(os.environ.get("RAGPOC_CHAOS_SEED", time.time()))
    result = await chaos_run(tmp_path, seed=seed, rounds=1)
    table = f"seed {seed}\n{render(result)}"
    assert {f.kind for f in result.faults} == set(FAULT_KINDS), table
    assert result.problems == {}, table
    assert result.verdict.accepted > 0, table
    assert result.verdict.outcomes["run.completed"] > 0, table
