"""Processes that start together create the schema together, and none of them fails."""

from __future__ import annotations

import asyncio
import sys

import sqlalchemy as sa

from libs.common.database import create_engine, metadata
from tests.stackproc import ROOT

CREATE_SCHEMA = """
import asyncio, sys
import libs.commandside, libs.readmodels  # each registers its tables
from libs.common.database import create_engine, create_schema

async def main(url):
    engine = create_engine(url)
    try:
        await create_schema(engine)
    finally:
        await engine.dispose()

asyncio.run(main(sys.argv[1]))
"""


async def test_processes_creating_the_schema_at_once_all_succeed(database_url: str) -> None:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CREATE_SCHEMA,
            database_url,
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(8)
    ]
    results = [await process.communicate() for process in processes]

    failures = [
        err.decode()[-400:] for (_, err), p in zip(results, processes, strict=True) if p.returncode
    ]
    assert failures == []
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    assert set(metadata.tables) <= names
