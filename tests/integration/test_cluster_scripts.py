"""Every Lua script and multi-key command the code sends keeps its keys in one hash slot, so it
runs on Redis/Valkey Cluster, which refuses a command whose keys span slots (CROSSSLOT).

The first test drives every public method that runs a script against a real cluster, for tasks
in several partitions, while recording each script registered and each invocation with its keys.
It then checks that every invocation named keys of one slot, and that every script the code
registers (found by reading `register_script(...)` calls in libs/ and services/) was invoked: a
script added later without a call here fails the test, naming it. The second test covers the
multi-key commands sent without a script: non-transactional pipelines across slots, and the
stream sets one XREAD may name together (`read_groups`).
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript, AsyncScriptCommands
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from libs.commandside.idempotency import IdempotencyKeys, Reservation
from libs.commandside.locks import Lease, TaskLocks
from libs.events import (
    RUNNERS_GROUP,
    EventStore,
    Keys,
    LockReleased,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunStarted,
    RunSuperseded,
)
from libs.events.claim_keeper import ClaimKeeper
from libs.events.redis_conn import connect_redis, read_groups
from libs.events.redis_typing import awaitable
from libs.events.retention import Trimmer
from libs.events.stats import RunStats
from services.cli.valkey_cluster import LocalCluster
from tests.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
TTL_MS = 30_000
# Task ids in partitions 3, 4, 9 and 14 of 16: tags in different slots (checked below).
TASKS = (3, 20, 41, 110)
EVENTS_PER_TASK = 6  # what `run_a_task_through_its_scripts` appends
FAR_FUTURE = "99999999999999-0"  # an archive position above every entry: all may be trimmed


@dataclass(frozen=True, slots=True)
class Invocation:
    source: str
    keys: tuple[str, ...]


@dataclass(slots=True)
class ScriptLog:
    """The scripts registered and invoked while a test ran, by their Lua source."""

    registered: set[str] = field(default_factory=set)
    invocations: list[Invocation] = field(default_factory=list)

    def invoked(self) -> set[str]:
        return {call.source for call in self.invocations}


def _text(script: str | bytes | memoryview) -> str:
    return script if isinstance(script, str) else bytes(script).decode()


@pytest.fixture
def script_log(monkeypatch: pytest.MonkeyPatch) -> ScriptLog:
    """Record every `register_script` (cluster and single-server clients share the mixin) and
    every script call, with its keys, before calling through."""
    log = ScriptLog()
    register = AsyncScriptCommands.register_script
    call = AsyncScript.__call__

    def recording_register(self: Any, script: Any) -> AsyncScript:
        log.registered.add(_text(script))
        return register(self, script)

    async def recording_call(
        self: AsyncScript,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        named = tuple(_text(key) for key in keys or ())
        log.invocations.append(Invocation(_text(self.script), named))
        return await call(self, keys=keys, args=args, client=client)

    monkeypatch.setattr(AsyncScriptCommands, "register_script", recording_register)
    monkeypatch.setattr(AsyncScript, "__call__", recording_call)
    return log


def scripts_in_code() -> dict[str, str]:
    """Lua source -> where it is defined, for every `register_script(...)` call in libs/ and
    services/ (its argument a module constant or a literal)."""
    found: dict[str, str] = {}
    for path in sorted([*(ROOT / "libs").rglob("*.py"), *(ROOT / "services").rglob("*.py")]):
        text = path.read_text()
        if "register_script(" not in text:
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(text)):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "register_script"
            ):
                continue
            where = f"{module}:{node.lineno}"
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Name):
                found[_text(getattr(importlib.import_module(module), arg.id))] = (
                    f"{module}.{arg.id}"
                )
            elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found[arg.value] = f"a literal at {where}"
            else:
                pytest.fail(f"cannot tell which script {where} registers: name it as a constant")
    return found


def opening(source: str) -> str:
    """A script's first line of code, to name it in a failure."""
    return next((line for line in source.splitlines() if line.strip()), source)


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


@pytest.fixture
def ns_keys() -> Keys:
    return Keys(namespace=f"t{uuid.uuid4().hex[:10]}", partitions=16)


@pytest.fixture
async def cluster_redis(
    valkey_cluster: LocalCluster, ns_keys: Keys
) -> AsyncIterator[aioredis.Redis]:
    client = connect_redis(valkey_cluster.url, cluster=True)
    yield client
    async for key in client.scan_iter(match=f"{ns_keys.namespace}:*", count=500):
        await client.delete(key)
    await client.aclose()


class ArchivedEverything:
    """An archive that holds every event, so the trimmer may take all that is old enough."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    async def projected_positions(self) -> dict[int, str]:
        return dict.fromkeys(range(self.partitions), FAR_FUTURE)

    async def last_archived(self, task_ids: Sequence[int]) -> dict[int, str]:
        return dict.fromkeys(task_ids, FAR_FUTURE)


async def run_a_task_through_its_scripts(redis: aioredis.Redis, keys: Keys, task_id: int) -> None:
    """A run admitted, taken, extended, written and released; a second run's failure reported
    by a reaper seizing its reservation; a third run's reservation released, then superseded."""
    locks, store = TaskLocks(redis, keys), EventStore(redis, keys)
    first, second, third = (f"run-{task_id}-{n}" for n in "abc")

    reservation = await locks.acquire(task_id, first, TTL_MS)
    assert isinstance(reservation, Lease)
    await store.append(RunRequested(task_id=task_id, run_id=first, fence=reservation.fence))
    lease = await locks.take_over(task_id, first, reservation.fence, TTL_MS, holder="runner-1")
    assert isinstance(lease, Lease)
    assert lease.fence == reservation.fence
    assert await locks.extend(lease)
    fence = lease.fence
    started = RunStarted(task_id=task_id, run_id=first, fence=fence, worker="runner-1")
    await store.append(started, lock_token=lease.token)
    done = RunCompleted(task_id=task_id, run_id=first, fence=fence, answer="blue")
    await store.append_outcome(done, lock_token=lease.token)
    released = LockReleased(task_id=task_id, run_id=first, fence=fence)
    await store.append_release(released, lock_token=lease.token)
    assert await store.run_outcome(task_id, first) == "run.completed"

    admitted = await locks.acquire(task_id, second, TTL_MS)
    assert isinstance(admitted, Lease)
    report = await locks.seize_for_report(
        task_id, second, fence=None, fallback_fence=admitted.fence, holder="reaper", ttl_ms=TTL_MS
    )
    assert (report.state, report.fence) == ("seized", admitted.fence)
    failed = RunFailed(task_id=task_id, run_id=second, fence=report.fence, reason="runner died")
    await store.append_outcome(failed, lock_token=report.token)
    assert await locks.release_token(task_id, report.token)

    unused = await locks.acquire(task_id, third, TTL_MS)
    assert isinstance(unused, Lease)
    assert await locks.release(unused)
    late = RunSuperseded(task_id=task_id, run_id=third, fence=unused.fence, reason="lost")
    await store.append_outcome(late, lock_token=None)
    assert await store.run_outcome(task_id, third) == "run.superseded"


async def use_idempotency_keys(redis: aioredis.Redis, keys: Keys, task_id: int) -> None:
    idempotency = IdempotencyKeys(redis, keys, ttl_s=60)
    kept = await idempotency.reserve(task_id, "retry-me", "fingerprint", f"run-{task_id}-a")
    dropped = await idempotency.reserve(task_id, "refused", "fingerprint", f"run-{task_id}-x")
    assert isinstance(kept, Reservation)
    assert isinstance(dropped, Reservation)
    await idempotency.confirm(kept, fence=1)
    await idempotency.forget(dropped)
    assert '"fence":1' in str(await redis.get(kept.redis_key))
    assert await redis.exists(dropped.redis_key) == 0


async def keep_a_claim(
    redis: aioredis.Redis, keys: Keys, script_log: ScriptLog, partition: int
) -> None:
    """A runner's claim on a pending command, kept for more than one touch interval."""
    stream = keys.run_commands(partition)
    await redis.xgroup_create(stream, RUNNERS_GROUP, id="0", mkstream=True)
    entry_id = await redis.xadd(stream, {"type": "run", "data": "{}"})
    await redis.xreadgroup(RUNNERS_GROUP, "runner-1", {stream: ">"}, count=1)
    keeper = ClaimKeeper(redis, RUNNERS_GROUP, "runner-1", min_idle_ms=300)
    handled = asyncio.Event()
    keeping = asyncio.create_task(keeper.keep(stream, entry_id, handled))
    touches = sum(1 for call in script_log.invocations if call.keys == (stream,))
    await eventually(
        lambda: sum(1 for call in script_log.invocations if call.keys == (stream,)),
        until=lambda n: n >= touches + 2,
        message="the claim keeper never touched the entry twice",
    )
    handled.set()
    await keeping
    pending = await redis.xpending_range(stream, RUNNERS_GROUP, min="-", max="+", count=10)
    assert [(p["message_id"], p["consumer"]) for p in pending] == [(entry_id, "runner-1")]


async def test_every_script_runs_on_a_cluster_with_all_its_keys_in_one_slot(
    cluster_redis: aioredis.Redis, ns_keys: Keys, script_log: ScriptLog
) -> None:
    redis, keys = cluster_redis, ns_keys
    assert len({slot(keys.task_lock(task_id)) for task_id in TASKS}) == len(TASKS)

    for task_id in TASKS:
        await run_a_task_through_its_scripts(redis, keys, task_id)
        await use_idempotency_keys(redis, keys, task_id)
    stats = RunStats(redis, keys)
    await stats.record("completed", 0.3, task_id=TASKS[0])
    await stats.record("failed", 7.0, task_id=TASKS[1])
    assert (await stats.snapshot())["count"] == 2
    await keep_a_claim(redis, keys, script_log, keys.partition_of(TASKS[0]))

    newest = await redis.xrevrange(keys.task_events(TASKS[-1]), count=1)
    newest_ms = int(newest[0][0].split("-")[0])
    await eventually(  # retention 0 trims what is older than the server's clock: let it tick
        redis.time, until=lambda now: now[0] * 1000 + now[1] // 1000 > newest_ms
    )
    trimmer = Trimmer(redis, keys, ArchivedEverything(keys.partitions), retention_s=0)
    dry = (await trimmer.run_once(dry_run=True)).counts()
    done = (await trimmer.run_once()).counts()
    assert dry["task_entries"] == done["task_entries"] == EVENTS_PER_TASK * len(TASKS)
    assert done["partition_entries"] == EVENTS_PER_TASK * len(TASKS)
    assert done["task_streams_emptied"] == len(TASKS)

    spanning = [
        (opening(call.source), call.keys)
        for call in script_log.invocations
        if len({slot(key) for key in call.keys}) != 1
    ]
    assert not spanning, f"scripts called with keys in several slots (or none): {spanning}"
    in_code = scripts_in_code()
    unknown = [opening(source) for source in script_log.registered - set(in_code)]
    assert not unknown, f"scripts registered that no register_script call names: {unknown}"
    untested = sorted(in_code[source] for source in set(in_code) - script_log.invoked())
    assert not untested, f"scripts never run by this test (add a call to them): {untested}"


async def test_multi_key_commands_keep_to_what_a_cluster_accepts(
    cluster_redis: aioredis.Redis, ns_keys: Keys, valkey_server: Any
) -> None:
    redis, keys = cluster_redis, ns_keys
    streams = [keys.run_commands(keys.partition_of(task_id)) for task_id in TASKS]
    delivered: dict[str, str] = {}
    for stream in streams:
        await redis.xgroup_create(stream, RUNNERS_GROUP, id="0", mkstream=True)
        delivered[stream] = await redis.xadd(stream, {"type": "run", "data": "{}"})
        await redis.xreadgroup(RUNNERS_GROUP, "runner-1", {stream: ">"})
        errors = keys.delivery_errors(stream, RUNNERS_GROUP)
        await awaitable(redis.hset(errors, delivered[stream], "boom"))

    # the consumer's ack: XACK and HDEL of entries in several slots, in one pipeline
    async with redis.pipeline(transaction=False) as pipe:
        for stream, entry_id in delivered.items():
            pipe.xack(stream, RUNNERS_GROUP, entry_id)
            pipe.hdel(keys.delivery_errors(stream, RUNNERS_GROUP), entry_id)
        assert await pipe.execute() == [1, 1] * len(streams)
    for stream in streams:
        assert (await redis.xpending(stream, RUNNERS_GROUP))["pending"] == 0
        assert await redis.exists(keys.delivery_errors(stream, RUNNERS_GROUP)) == 0

    logs = keys.partition_logs()
    groups = read_groups(redis, logs)
    assert groups == [[log] for log in logs]
    assert len({slot(group[0]) for group in groups}) == keys.partitions
    for group in groups:
        assert await redis.xread(dict.fromkeys(group, "0-0")) == []
    with pytest.raises(RedisClusterException, match="slot"):
        await redis.xread(dict.fromkeys(logs, "0-0"))  # why the split is needed

    single = connect_redis(valkey_server.connection_url, cluster=False)
    try:
        assert read_groups(single, logs) == [logs]
        assert await single.xread(dict.fromkeys(logs, "0-0")) == []
    finally:
        await single.aclose()
