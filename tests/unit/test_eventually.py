"""The waiting helper the tests share: what it returns, and how it fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.eventually import eventually, eventually_sync


async def test_returns_the_first_truthy_value_of_a_plain_or_an_async_check() -> None:
    calls: list[int] = []

    async def check() -> list[int]:
        calls.append(len(calls))
        return calls if len(calls) == 3 else []

    assert await eventually(check, interval=0) == [0, 1, 2]
    assert await eventually(lambda: "ready", interval=0) == "ready"


async def test_until_decides_and_the_value_is_returned_whole() -> None:
    seen: Iterator[dict[str, object]] = iter(
        [{"status": "queued"}, {"status": "running"}, {"status": "done", "n": 3}]
    )

    def fetch() -> dict[str, object]:
        return next(seen)

    body = await eventually(fetch, until=lambda b: b["status"] == "done", interval=0)
    assert body == {"status": "done", "n": 3}


async def test_on_time_out_it_says_what_was_awaited_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"never ready \(waited 0.05 s; last value: 'no'\)"):
        await eventually(
            lambda: "no", until=lambda v: v == "yes", within=0.05, message="never ready"
        )


async def test_a_check_that_raises_ends_the_wait_at_once() -> None:
    def broken() -> bool:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await eventually(broken, within=60)


def test_the_sync_twin_waits_the_same_way_and_builds_its_message_only_on_failure() -> None:
    values = iter([0, 0, 7])
    assert eventually_sync(lambda: next(values), interval=0) == 7
    asked: list[str] = []

    def message() -> str:
        asked.append("asked")
        return "still nothing"

    assert eventually_sync(lambda: 1, message=message) == 1
    assert asked == []
    with pytest.raises(AssertionError, match="still nothing"):
        eventually_sync(lambda: None, within=0.05, message=message)
    assert asked == ["asked"]
