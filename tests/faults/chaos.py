"""A fault run, start to finish: the stack comes up, the workload runs while the nemesis
injects faults, everything is healed, the clients' requests settle, and the checker compares
what they saw with the event log; the read models are compared with a rebuild from the archive.
`tests/faults/test_chaos.py` runs a short one in `make test`, `make chaos` a long one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa

from libs.common.database import create_engine
from libs.events import Keys
from libs.readmodels.rebuild import rebuild_from_archive
from libs.readmodels.schema import parked_events, projector_positions
from tests.eventually import eventually
from tests.faults.checker import TERMINAL, TaskLog, Verdict, check_history
from tests.faults.history import History
from tests.faults.nemesis import Fault, Nemesis
from tests.faults.stack import KNOBS, ChaosStack, chaos_stack
from tests.faults.workload import Workload
from tests.readmodel_snapshot import snapshot

__all__ = ["ChaosResult", "chaos_run"]

KEYS = Keys()  # what `ragpoc up` runs with: the default namespace and partitions
MAX_DELIVERIES = int(KNOBS["RAGPOC_CONSUMER_MAX_DELIVERIES"])
SETTLE_S = 120.0  # after the last fault, how long every accepted run has to end


@dataclass
class ChaosResult:
    seconds: float
    faults: list[Fault]
    history: History
    verdict: Verdict
    recover_s: dict[str, float] = field(default_factory=dict)  # fault kind -> the longest
    rebuild_differs: list[str] = field(default_factory=list)  # tables unlike the rebuild's
    parked: int = 0
    serving_after: str = ""  # "" when the stack still served a run after the faults

    @property
    def problems(self) -> dict[str, list[str]]:
        found = dict(self.verdict.problems)
        if self.rebuild_differs:
            found["read models differ from a rebuild"] = self.rebuild_differs
        if self.parked:
            found["events parked by the projector"] = [str(self.parked)]
        if self.serving_after:
            found["not serving after the faults"] = [self.serving_after]
        return found


async def chaos_run(
    root: Path,
    *,
    seed: int,
    duration_s: float | None = None,
    rounds: int | None = None,
    tasks: int = 12,
) -> ChaosResult:
    """Faults for `duration_s`, or for `rounds` rounds of every fault kind."""
    rng = random.Random(seed)
    started = time.monotonic()
    with chaos_stack(root) as stack:
        history = History()
        workload = await Workload.start(stack.gateways, history, rng, tasks)
        history.poison_ids.append(_poison(stack))
        nemesis = Nemesis(stack, rng)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(workload.run(stop))
            if rounds is not None:
                await nemesis.run(stop, rounds=rounds)
            else:
                group.create_task(nemesis.run(stop))
                await asyncio.sleep(duration_s or 0)
            stop.set()
        serving = await _serving_after(stack)
        await _settle(stack, history)
        await _projector_caught_up(stack)
        logs, dead, docs = _read_truth(stack, [*workload.tasks])
        verdict = check_history(history, logs, dead, docs, max_deliveries=MAX_DELIVERIES)
        stack.up.stop()
        stack.stop_extras()
        differs, parked = await _compare_with_rebuild(stack.database_url)
    return ChaosResult(
        seconds=time.monotonic() - started,
        faults=nemesis.faults,
        history=history,
        verdict=verdict,
        recover_s=_recovery(nemesis.faults, history, logs),
        rebuild_differs=differs,
        parked=parked,
        serving_after=serving,
    )


def _poison(stack: ChaosStack) -> str:
    """A run command no runner can read: it must be dead-lettered after K deliveries."""
    with redis.Redis(port=stack.valkey.port, decode_responses=True) as admin:
        return str(admin.xadd(KEYS.run_commands(0), {"type": "run", "data": "not a command"}))


async def _serving_after(stack: ChaosStack) -> str:
    """ "" once a new task, on each gateway, runs to its answer; else what went wrong."""
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            for gateway in stack.gateways:
                created = await eventually(
                    lambda g=gateway: _create(client, g),
                    within=60,
                    interval=0.5,
                    message=f"{gateway} never created a task after the faults",
                )
                reply = await eventually(
                    lambda g=gateway, t=created: client.post(
                        f"{g}/run-agents", params={"wait": 30}, json={"id": t}
                    ),
                    until=lambda r: r.status_code != 404,  # until the task is projected
                    within=30,
                    interval=0.2,
                )
                if reply.status_code != 200 or "blue" not in reply.text:
                    return f"{gateway}: {reply.status_code} {reply.text[:300]}"
    except (AssertionError, httpx.HTTPError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


async def _create(client: httpx.AsyncClient, gateway: str) -> int | None:
    try:
        reply = await client.post(f"{gateway}/api/tasks", json={"title": "Why is the sky blue?"})
    except httpx.HTTPError:
        return None
    return int(reply.json()["id"]) if reply.status_code == 201 else None


async def _settle(stack: ChaosStack, history: History) -> None:
    """Until every run in the log has ended, the poison is dead-lettered and every accepted
    ingest has its outcomes (or SETTLE_S has passed: the checker then says what is missing)."""

    def settled() -> bool:
        logs, dead, docs = _read_truth(stack, sorted({r.task_id for r in history.requests}))
        verdict = check_history(history, logs, dead, docs, max_deliveries=MAX_DELIVERIES)
        return not (verdict.lost or verdict.poison_problems or verdict.ingests_lost)

    with contextlib.suppress(AssertionError):
        await eventually(settled, within=SETTLE_S, interval=1.0)


async def _projector_caught_up(stack: ChaosStack) -> None:
    """Until the projector's position in each partition is the partition log's last entry."""
    engine = create_engine(stack.database_url)
    try:

        async def behind() -> list[int]:
            async with engine.connect() as conn:
                rows = await conn.execute(sa.select(projector_positions))
                at = {row.partition: row.last_id for row in rows}
            with redis.Redis(port=stack.valkey.port, decode_responses=True) as admin:
                lasts = {
                    p: admin.xinfo_stream(KEYS.partition_log(p))["last-generated-id"]
                    for p in range(KEYS.partitions)
                    if admin.exists(KEYS.partition_log(p))
                }
            return [p for p, last in lasts.items() if at.get(p) != last]

        await eventually(
            behind, until=lambda late: not late, within=60, interval=0.5, message="projector late"
        )
    finally:
        await engine.dispose()


def _read_truth(
    stack: ChaosStack, task_ids: list[int]
) -> tuple[dict[int, TaskLog], list[dict[str, str]], list[dict[str, Any]]]:
    """The task logs, the run-command dead letters and the document events, from Valkey."""
    with redis.Redis(port=stack.valkey.port, decode_responses=True) as admin:
        logs: dict[int, TaskLog] = {
            task_id: [
                (entry_id, json.loads(fields["data"]))
                for entry_id, fields in admin.xrange(KEYS.task_events(task_id))
            ]
            for task_id in task_ids
        }
        dead = [
            fields
            for stream in KEYS.run_command_streams()
            for _id, fields in admin.xrange(KEYS.dead_letters(stream))
        ]
        docs = [json.loads(fields["data"]) for _id, fields in admin.xrange(KEYS.doc_events)]
    return logs, dead, docs


async def _compare_with_rebuild(database_url: str) -> tuple[list[str], int]:
    """The read-model tables that differ from a rebuild from the archive, and how many events
    the projector parked."""
    engine = create_engine(database_url)
    try:
        live = await snapshot(engine)
        async with engine.connect() as conn:
            parked = int(
                (
                    await conn.execute(sa.select(sa.func.count()).select_from(parked_events))
                ).scalar_one()
            )
        await rebuild_from_archive(engine)
        rebuilt = await snapshot(engine)
    finally:
        await engine.dispose()
    return [_difference(t, live[t], rebuilt[t]) for t in live if live[t] != rebuilt[t]], parked


def _difference(table: str, live: list[dict[str, Any]], rebuilt: list[dict[str, Any]]) -> str:
    at = next((n for n, (a, b) in enumerate(zip(live, rebuilt, strict=False)) if a != b), None)
    at = min(len(live), len(rebuilt)) if at is None else at
    shown = [rows[at] if at < len(rows) else None for rows in (live, rebuilt)]
    return (
        f"{table}: {len(live)} live rows, {len(rebuilt)} rebuilt; row {at}: "
        f"live {shown[0]} / rebuilt {shown[1]}"
    )


def _recovery(faults: list[Fault], history: History, logs: dict[int, TaskLog]) -> dict[str, float]:
    """For each fault kind, the longest time from a fault's healing to the end of the first
    run a client asked for afterwards: how long the stack took to work again."""
    ended: dict[str, float] = {}
    for log in logs.values():
        for entry_id, event in log:
            if event["type"] in TERMINAL:
                ended.setdefault(str(event["run_id"]), int(entry_id.split("-")[0]) / 1000)
    accepted = sorted(
        (t.at, ended[t.run_id]) for r in history.requests for t in r.accepted if t.run_id in ended
    )
    longest: dict[str, float] = {}
    for fault in faults:
        after = [end for at, end in accepted if at >= fault.healed]
        if fault.healed and after:
            longest[fault.kind] = max(longest.get(fault.kind, 0.0), min(after) - fault.healed)
    return longest
