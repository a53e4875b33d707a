"""The trim bound: the smallest of the age cutoff and the safety bounds, as a MINID (XTRIM
removes the entries below it), with no Redis."""

from __future__ import annotations

import pytest

from libs.events.retention import StreamTrim, TrimReport, age_cutoff, minid_bound, next_id


def test_the_age_cutoff_is_now_minus_the_retention_in_ms() -> None:
    assert age_cutoff(1_700_000_000_000, 86_400) == "1699913600000-0"
    assert age_cutoff(1_700_000_000_000, 0) == "1700000000000-0"
    assert age_cutoff(1_700_000_000_000, 0.25) == "1699999999750-0"
    assert age_cutoff(5_000, 3600) == "0-0"  # never below the first possible id


def test_next_id_is_the_smallest_id_after() -> None:
    assert next_id("1700000000000-0") == "1700000000000-1"
    assert next_id("1700000000000-41") == "1700000000000-42"
    assert next_id("1700000000000") == "1700000000000-1"
    assert next_id(f"17-{2**64 - 1}") == "18-0"


def test_the_age_cutoff_wins_when_everything_older_is_safe() -> None:
    assert minid_bound("1000-0", ["2000-5", "3000-0"]) == "1000-0"


def test_a_safety_bound_below_the_cutoff_wins() -> None:
    # the projector (or a group) is behind: keep everything from its bound on
    assert minid_bound("5000-0", ["9000-0", "4000-7"]) == "4000-7"


def test_ids_compare_as_numbers_not_strings() -> None:
    # as strings "999-0" > "1000-0"; as ids it is the smaller
    assert minid_bound("1000-0", ["999-0"]) == "999-0"
    assert minid_bound("5-10", ["5-9"]) == "5-9"


def test_age_only_when_there_is_no_safety_bound() -> None:
    assert minid_bound("1700000000000-0", []) == "1700000000000-0"


@pytest.mark.parametrize(
    "keep",
    [
        ["0-0"],  # unknown position / no group / nothing archived: keep everything
        ["0-1"],  # the smallest id: nothing lies below it
        ["7000-0", "0-0"],
    ],
)
def test_nothing_may_go_when_a_bound_keeps_everything(keep: list[str]) -> None:
    assert minid_bound("5000-0", keep) is None


def test_nothing_may_go_when_the_retention_covers_everything() -> None:
    assert minid_bound(age_cutoff(5_000, 3600), ["9000-0"]) is None


def test_an_archived_entry_is_trimmed_with_everything_below_it() -> None:
    position = "4000-3"  # the projector's position: archived up to and including it
    bound = minid_bound("9000-0", [next_id(position)])
    assert bound == "4000-4"  # XTRIM MINID 4000-4 removes 4000-3, keeps 4000-4 on


def test_the_report_counts_per_kind() -> None:
    report = TrimReport(
        cutoff="9000-0",
        dry_run=False,
        streams=(
            StreamTrim("partition", "p0", "10-0", 4),
            StreamTrim("partition", "p1", None, 0),
            StreamTrim("task", "t1", "5-1", 3, emptied=True),
            StreamTrim("task", "t2", "5-1", 2),
            StreamTrim("commands", "run", "3-0", 1),
            StreamTrim("docs", "docs", "9000-0", 7),
        ),
        tasks_visited=5,
    )
    assert report.counts() == {
        "partition_entries": 4,
        "task_entries": 5,
        "command_entries": 1,
        "doc_entries": 7,
        "tasks_visited": 5,
        "task_streams_emptied": 1,
    }
