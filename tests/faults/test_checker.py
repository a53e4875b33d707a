"""The history checker finds each broken promise in a history made to break it, and nothing in
a history that keeps them all."""

from __future__ import annotations

from typing import Any

from tests.faults.checker import TaskLog, check_history
from tests.faults.history import Follow, History, Ingest, Request, RunTry

K = 3


def ev(kind: str, run_id: str = "", fence: int = 0, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "task_id": 1, "run_id": run_id, "fence": fence, **fields}


def execution(run_id: str, fence: int, start_ms: int) -> TaskLog:
    """A whole run: admitted at `fence`, started, answered, released."""
    kinds = ["lock.acquired", "run.requested", "run.started", "llm.delta", "run.completed"]
    kinds.append("lock.released")
    return [(f"{start_ms + n}-0", ev(kind, run_id, fence)) for n, kind in enumerate(kinds)]


def accepted(run_id: str, key: str = "k") -> Request:
    return Request(1, key, [RunTry(1, key, 0.0, 202, run_id)])


def good_log() -> TaskLog:
    return [("1000-0", ev("task.created")), *execution("a", 1, 2000), *execution("b", 2, 3000)]


def check(history: History, log: TaskLog, **kw: Any) -> Any:
    return check_history(
        history, {1: log}, kw.get("dead", []), kw.get("docs", []), max_deliveries=K
    )


def test_a_history_that_keeps_every_promise_has_no_problem() -> None:
    history = History(requests=[accepted("a"), accepted("b", "k2")])
    history.follows.append(Follow(1, [entry_id for entry_id, _ in good_log()[:5]]))
    history.poison_ids.append("9-0")
    history.ingests.append(Ingest("batch", ("doc1",)))
    dead = [{"source_id": "9-0", "deliveries": str(K), "reason": "EventDecodeError: bad"}]
    docs = [{"type": "doc.ingested", "doc_id": "doc1"}]
    verdict = check(history, good_log(), dead=dead, docs=docs)
    assert verdict.problems == {}
    assert (verdict.accepted, verdict.requested) == (2, 2)
    assert verdict.outcomes == {"run.completed": 2}


def test_a_run_accepted_that_never_ended_is_lost() -> None:
    log = [entry for entry in good_log() if entry[1]["type"] != "run.completed"]
    verdict = check(History(requests=[accepted("a")]), log)
    assert len(verdict.lost) == 2  # "a", and "b" that is only in the log
    assert "accepted, never ended" in verdict.lost[0]


def test_a_202_the_log_never_heard_of_is_lost() -> None:
    verdict = check(History(requests=[accepted("ghost")]), good_log())
    assert any("no run.requested" in problem for problem in verdict.lost)


def test_two_terminal_events_of_one_run_are_found() -> None:
    log = [*good_log(), ("4000-0", ev("run.failed", "a", 1, reason="late"))]
    assert check(History(), log).ended_twice == ["run a: 2 terminal events"]


def test_interleaved_executions_overlap() -> None:
    first, second = execution("a", 1, 2000), execution("b", 2, 2000)
    # b takes the lock and starts while a is still writing its answer
    log = [*first[:3], second[0], *second[1:3], *first[3:], *second[3:]]
    log = [(f"{2000 + n}-0", event) for n, (_id, event) in enumerate(log)]
    verdict = check(History(), log)
    assert verdict.overlapping, verdict
    assert verdict.stale_writes  # a's answer came after b's fence was taken


def test_a_write_at_an_old_fence_is_stale() -> None:
    log = [*good_log(), ("5000-0", ev("llm.delta", "a", 1, index=9, text="late"))]
    [stale] = check(History(), log).stale_writes
    assert "fence 1, the lock's fence was 2" in stale


def test_one_key_answered_with_two_runs_is_found() -> None:
    request = accepted("a")
    request.tries.append(RunTry(1, "k", 1.0, 202, "b"))
    assert check(History(requests=[request]), good_log()).key_conflicts


def test_an_sse_follower_that_missed_or_repeated_an_event_is_found() -> None:
    ids = [entry_id for entry_id, _ in good_log()]
    history = History(
        follows=[
            Follow(1, ids[:3] + ids[4:6]),  # one missing
            Follow(1, ids[:3] + ids[2:4]),  # one twice
            Follow(1, ids[1:4]),  # did not start at the beginning
        ]
    )
    problems = check(history, good_log()).sse_problems
    assert len(problems) == 3
    assert "1 events missing" in problems[0]
    assert "repeated" in problems[1]
    assert "first event" in problems[2]


def test_poison_dead_lettered_after_the_wrong_count_or_never_is_found() -> None:
    history = History(poison_ids=["9-0", "10-0"])
    dead = [{"source_id": "9-0", "deliveries": str(K + 1), "reason": "bad"}]
    problems = check(history, good_log(), dead=dead).poison_problems
    assert problems == [
        f"poison 9-0 dead-lettered after {K + 1} deliveries, not {K}",
        "poison 10-0 was never dead-lettered",
    ]


def test_an_ingested_document_without_an_outcome_is_lost() -> None:
    history = History(ingests=[Ingest("b1", ("d1", "d2")), Ingest("b2", ("d3",))])
    docs = [
        {"type": "doc.ingested", "doc_id": "d1"},
        {"type": "doc.failed", "doc_id": "d2", "batch_id": "b1"},
        {"type": "doc.failed", "doc_id": "d3", "batch_id": "other batch"},
    ]
    assert check(history, good_log(), docs=docs).ingests_lost == ["batch b2: document d3"]
