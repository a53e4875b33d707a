"""The history checker: the promises of a fault run, verified from the event log and what the
clients recorded. Pure functions over plain data, so each check is tested on its own with a
history that breaks it (tests/faults/test_checker.py).

- every accepted run (a 202 to a client, or a `run.requested` in the log) ends in exactly one
  terminal event (`run.completed`, `run.failed` or `run.superseded`);
- executions never overlap: the work events (`run.started` … `run.completed`) of one execution
  (a run at a fence) never interleave with another's in the task's log, and each was appended
  at the fence of the newest `lock.acquired` before it (else it is a stale write);
- one Idempotency-Key names one run, whichever gateway answered;
- every SSE follower saw a gapless, duplicate-free, ordered slice of the task's log;
- a poison command is dead-lettered after exactly K deliveries, with its reason;
- every accepted ingest ends in an outcome for each of its documents.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.faults.history import History

__all__ = ["TERMINAL", "WORK", "Verdict", "check_history"]

TERMINAL = frozenset({"run.completed", "run.failed", "run.superseded"})
# What only the holder of a run's lease writes while it executes the run.
WORK = frozenset({"run.started", "retrieval.done", "llm.delta", "run.completed"})

# A task's log: (stream id, event as JSON) in order.
TaskLog = Sequence[tuple[str, Mapping[str, Any]]]


@dataclass
class Verdict:
    accepted: int = 0  # distinct runs a client got a 202/200 for
    requested: int = 0  # runs in the log (`run.requested`)
    outcomes: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    ended_twice: list[str] = field(default_factory=list)
    overlapping: list[str] = field(default_factory=list)
    stale_writes: list[str] = field(default_factory=list)
    key_conflicts: list[str] = field(default_factory=list)
    sse_problems: list[str] = field(default_factory=list)
    poison_problems: list[str] = field(default_factory=list)
    ingests_lost: list[str] = field(default_factory=list)

    @property
    def problems(self) -> dict[str, list[str]]:
        found = {
            "lost": self.lost,
            "ended twice": self.ended_twice,
            "overlapping executions": self.overlapping,
            "stale writes": self.stale_writes,
            "one key, two runs": self.key_conflicts,
            "SSE gaps": self.sse_problems,
            "poison": self.poison_problems,
            "ingests lost": self.ingests_lost,
        }
        return {name: items for name, items in found.items() if items}


def check_history(
    history: History,
    logs: Mapping[int, TaskLog],
    dead_letters: Sequence[Mapping[str, str]],
    doc_events: Sequence[Mapping[str, Any]],
    *,
    max_deliveries: int,
) -> Verdict:
    verdict = Verdict()
    _check_runs(history, logs, verdict)
    for task_id, log in logs.items():
        _check_executions(task_id, log, verdict)
    _check_keys(history, verdict)
    _check_followers(history, logs, verdict)
    _check_poison(history, dead_letters, max_deliveries, verdict)
    _check_ingests(history, doc_events, verdict)
    return verdict


def _check_runs(history: History, logs: Mapping[int, TaskLog], verdict: Verdict) -> None:
    requested: set[str] = set()
    terminals: Counter[str] = Counter()
    kinds: dict[str, str] = {}
    for log in logs.values():
        for _id, event in log:
            run_id = str(event.get("run_id", ""))
            if event["type"] == "run.requested":
                requested.add(run_id)
            elif event["type"] in TERMINAL:
                terminals[run_id] += 1
                kinds[run_id] = event["type"]
    accepted = {t.run_id for r in history.requests for t in r.accepted}
    verdict.accepted, verdict.requested = len(accepted), len(requested)
    for run_id in sorted(accepted - requested):
        verdict.lost.append(f"run {run_id}: a client got a 202, the log has no run.requested")
    for run_id in sorted(accepted | requested):
        if terminals[run_id] == 0:
            verdict.lost.append(f"run {run_id}: accepted, never ended")
        elif terminals[run_id] > 1:
            verdict.ended_twice.append(f"run {run_id}: {terminals[run_id]} terminal events")
        if terminals[run_id]:
            verdict.outcomes[kinds[run_id]] += 1


def _check_executions(task_id: int, log: TaskLog, verdict: Verdict) -> None:
    fence = 0  # of the newest lock.acquired so far
    spans: dict[tuple[str, int], list[int]] = {}
    for position, (entry_id, event) in enumerate(log):
        kind = event["type"]
        if kind == "lock.acquired":
            fence = max(fence, int(event["fence"]))
            continue
        if kind not in WORK:
            continue
        execution = (str(event["run_id"]), int(event["fence"]))
        if execution[1] != fence:
            verdict.stale_writes.append(
                f"task {task_id} {entry_id}: {kind} of run {execution[0]} at fence "
                f"{execution[1]}, the lock's fence was {fence}"
            )
        span = spans.setdefault(execution, [position, position])
        span[1] = position
    latest: tuple[tuple[str, int], int] | None = None  # the execution reaching furthest
    for execution, (start, end) in sorted(spans.items(), key=lambda item: item[1][0]):
        if latest is not None and start < latest[1]:
            other = latest[0]
            verdict.overlapping.append(
                f"task {task_id}: run {execution[0]} (fence {execution[1]}) started while run "
                f"{other[0]} (fence {other[1]}) was still executing"
            )
        if latest is None or end > latest[1]:
            latest = (execution, end)


def _check_keys(history: History, verdict: Verdict) -> None:
    for request in history.requests:
        runs = {t.run_id for t in request.accepted}
        if len(runs) > 1:
            verdict.key_conflicts.append(
                f"task {request.task_id} key {request.key}: runs {sorted(runs)}"
            )


def _entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _check_followers(history: History, logs: Mapping[int, TaskLog], verdict: Verdict) -> None:
    for number, follow in enumerate(history.follows):
        if not follow.ids:
            continue
        where = f"follower {number} of task {follow.task_id}"
        seen = [_entry_key(i) for i in follow.ids]
        if any(b <= a for a, b in itertools.pairwise(seen)):
            verdict.sse_problems.append(f"{where}: ids out of order or repeated")
            continue
        log = [_entry_key(entry_id) for entry_id, _ in logs.get(follow.task_id, [])]
        expected = [key for key in log if seen[0] <= key <= seen[-1]]
        if not log or log[0] != seen[0]:
            verdict.sse_problems.append(f"{where}: did not start at the task's first event")
        elif expected != seen:
            missing = len(set(expected) - set(seen))
            verdict.sse_problems.append(f"{where}: {missing} events missing between its ends")


def _check_poison(
    history: History,
    dead_letters: Sequence[Mapping[str, str]],
    max_deliveries: int,
    verdict: Verdict,
) -> None:
    by_source = {d.get("source_id", ""): d for d in dead_letters}
    for poison in history.poison_ids:
        dead = by_source.get(poison)
        if dead is None:
            verdict.poison_problems.append(f"poison {poison} was never dead-lettered")
        elif dead.get("deliveries") != str(max_deliveries):
            verdict.poison_problems.append(
                f"poison {poison} dead-lettered after {dead.get('deliveries')} deliveries, "
                f"not {max_deliveries}"
            )
        elif not dead.get("reason"):
            verdict.poison_problems.append(f"poison {poison} dead-lettered without a reason")


def _check_ingests(
    history: History, doc_events: Sequence[Mapping[str, Any]], verdict: Verdict
) -> None:
    ingested = {e["doc_id"] for e in doc_events if e.get("type") == "doc.ingested"}
    failed: dict[str, set[str]] = defaultdict(set)
    for event in doc_events:
        if event.get("type") == "doc.failed":
            failed[str(event.get("batch_id", ""))].add(event["doc_id"])
    for ingest in history.ingests:
        for doc_id in ingest.document_ids:
            if doc_id not in ingested and doc_id not in failed[ingest.batch_id]:
                verdict.ingests_lost.append(f"batch {ingest.batch_id}: document {doc_id}")
