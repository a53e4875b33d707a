"""SQLite writers take turns across processes: while another process holds the writer lock file
beside the database, a write transaction here waits for it, and goes on once that process is
killed (the kernel drops a dead process's lock); a write cancelled while it waits leaves the lock
free."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.database import create_engine, one_writer, write_transaction

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (n INTEGER)"))
    yield engine
    await engine.dispose()


def hold_lock_in_another_process(tmp_path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "db.sqlite-writer.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def stop(holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait()
    assert holder.stdout is not None
    holder.stdout.close()


async def test_a_write_waits_for_another_process_and_goes_on_when_it_dies(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    holder = hold_lock_in_another_process(tmp_path)

    async def insert() -> None:
        async with write_transaction(engine) as conn:
            await conn.execute(sa.text("INSERT INTO t VALUES (1)"))

    writing = asyncio.create_task(insert())
    await asyncio.sleep(0.3)
    assert not writing.done(), "wrote while another process held the writers' lock"
    stop(holder)
    await asyncio.wait_for(writing, timeout=5)
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar_one() == 1


async def test_a_write_cancelled_while_waiting_leaves_the_lock_free(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    holder = hold_lock_in_another_process(tmp_path)

    async def wait_turn() -> None:
        async with one_writer(engine):
            pass

    waiting = asyncio.create_task(wait_turn())
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    stop(holder)
    await asyncio.wait_for(wait_turn(), timeout=5)  # neither this process nor a dead one holds it
