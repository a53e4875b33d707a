"""What the projector parks: a write the database refused for its data, never one that failed
because the database or its connection went away."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from libs.readmodels.parking import clean_text, refusal, rejected


def wrapped(kind: type[DBAPIError], invalidated: bool = False) -> DBAPIError:
    return kind("INSERT ...", {}, Exception("detail"), connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "exc",
    [
        wrapped(DataError),  # NUL in text, a value out of range, a string too long
        wrapped(IntegrityError),  # a constraint (a lost race is told apart before)
        StatementError("bad parameter", "INSERT ...", {}, ValueError("x")),
        OverflowError("Python int too large to convert to SQLite INTEGER"),
    ],
)
def test_a_refusal_for_the_data_is_parked(exc: BaseException) -> None:
    assert rejected(exc)


@pytest.mark.parametrize(
    "exc",
    [
        wrapped(OperationalError),  # terminated session, server gone, SQLite busy
        wrapped(InterfaceError),
        wrapped(ProgrammingError),  # a table missing (a rebuild recreating it)
        wrapped(DataError, invalidated=True),
        PoolTimeout("pool exhausted"),
        ConnectionResetError(),
        TimeoutError(),
        aioredis.ConnectionError("Connection closed by server."),
    ],
)
def test_an_unavailable_database_is_retried_not_parked(exc: BaseException) -> None:
    assert not rejected(exc)


def test_reasons_are_one_storable_line() -> None:
    error = DataError(
        "INSERT INTO tasks ...", {}, ValueError("text fields cannot contain NUL\nmore")
    )
    assert refusal(error) == "refused by the database: ValueError: text fields cannot contain NUL"
    assert clean_text("a\x00b") == "a\\x00b"
    assert len(clean_text("x" * 1000)) == 500
