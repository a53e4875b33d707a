"""`GET /api/jobs`: the job / worker view.

Per service kind (runner, ingestor): the live workers from the worker registry, the consumer
group's lag, its pending entries (idle time, deliveries, whether their consumer is alive) and the
dead letters with their reasons; then the recent failed runs, for every queued run claim why it
is still waiting, and the log entries the projector parked (could not fold) with their reasons.

The runners consume one run-command stream per partition (and the pre-partition stream while it
exists), so their view sums lags and pending counts over those streams and merges their pending
entries and dead letters, each row naming its stream. The streams may sit on different cluster
shards, so each step is one pipeline of single-key commands, never one command naming several
streams. Every read is bounded (PENDING_LIMIT, DEAD_LETTER_LIMIT, ...)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from libs.commandside.claims import queued_claims
from libs.events import INGESTORS_GROUP, RUNNERS_GROUP, Keys
from libs.events.ids import entry_key
from libs.events.store import Entries
from libs.events.workers import WorkerInfo, WorkerRegistry
from libs.readmodels import RunStatus
from libs.readmodels.queries import count_parked, list_parked
from libs.readmodels.schema import runs
from services.gateway.context import GatewayContext, context_of
from services.gateway.validation import MAX_ID, bounded_int

__all__ = ["jobs"]

PENDING_LIMIT = 100
DEAD_LETTER_LIMIT = 50
FAILED_RUNS_LIMIT = 20
WAITING_LIMIT = 50
PARKED_LIMIT = 50
FAILED_STATES = (RunStatus.FAILED, RunStatus.SUPERSEDED)
NAMED_IN_NOTES = 3  # streams named in a note before the rest are only counted


def iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()


def runner_streams(keys: Keys) -> list[str]:
    """Every stream the runners may consume: the partitions', then the pre-partition one (kept
    only while it exists: `_group_info` drops it silently when it does not)."""
    return [*keys.run_command_streams(), keys.legacy_run_commands]


@dataclass
class ServiceView:
    service: str
    streams: list[str]
    group: str
    optional: frozenset[str] = frozenset()  # streams left out without a note when missing
    workers: list[WorkerInfo] = field(default_factory=list)
    lag: int | None = 0
    pending_count: int = 0
    last_delivered: dict[str, str] = field(default_factory=dict)  # stream -> id, group present
    notes: list[str] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    pending_max_idle_ms: int = 0  # over every pending row read, not only those shown
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def live_ids(self) -> set[str]:
        return {w.id for w in self.workers}

    def to_builtins(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "group": self.group,
            "workers": [
                {**msgspec.to_builtins(w), "started": iso(w.started_at), "seen": iso(w.seen_at)}
                for w in self.workers
            ],
            "lag": self.lag,
            "pending_count": self.pending_count,
            "notes": self.notes,
            "pending": self.pending,
            "dead_letters": self.dead_letters,
        }


def _names(streams: list[str]) -> str:
    shown = ", ".join(streams[:NAMED_IN_NOTES])
    more = len(streams) - NAMED_IN_NOTES
    return shown if more <= 0 else f"{shown} and {more} more"


def _note_missing(view: ServiceView, what: str, streams: list[str]) -> None:
    if len(streams) == 1:
        view.notes.append(f"{what} {streams[0]} does not exist yet")
    elif streams:
        view.notes.append(f"{what}s {_names(streams)} do not exist yet")


async def _group_info(redis: aioredis.Redis, view: ServiceView) -> bool:
    """Fill lag / pending count / last-delivered ids from XINFO GROUPS of every stream, summed;
    False when no stream has the group yet. A missing optional stream is dropped from the view."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in view.streams:
            pipe.xinfo_groups(stream)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    missing_streams: list[str] = []
    missing_groups: list[str] = []
    lags: list[int | None] = []
    present: list[str] = []
    for stream, reply in zip(view.streams, replies, strict=True):
        if isinstance(reply, Exception):
            if "no such key" not in str(reply).lower():
                raise reply
            if stream not in view.optional:
                missing_streams.append(stream)
                present.append(stream)
            continue
        present.append(stream)
        info = next((g for g in reply if g.get("name") == view.group), None)
        if info is None:
            missing_groups.append(stream)
            continue
        lag = info.get("lag")
        lags.append(None if lag is None else int(lag))
        view.pending_count += int(info.get("pending") or 0)
        view.last_delivered[stream] = str(info.get("last-delivered-id") or "0-0")
    view.streams = present
    _note_missing(view, "stream", missing_streams)
    if missing_groups:
        view.notes.append(f"group {view.group} does not exist yet on {_names(missing_groups)}")
    known = [lag for lag in lags if lag is not None]
    view.lag = sum(known) if len(known) == len(lags) else None
    if view.lag is None:
        view.notes.append("lag unknown (entries deleted from a stream, or Redis < 7)")
    return bool(view.last_delivered)


async def _pending(redis: aioredis.Redis, view: ServiceView) -> None:
    """The oldest PENDING_LIMIT pending entries over every stream with the group, oldest first."""
    streams = list(view.last_delivered)
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xpending_range(stream, view.group, min="-", max="+", count=PENDING_LIMIT)
        replies: list[list[dict[str, Any]]] = await pipe.execute()
    live = view.live_ids
    rows: list[dict[str, Any]] = [
        {
            "id": str(row["message_id"]),
            "stream": stream,
            "consumer": str(row["consumer"]),
            "idle_ms": int(row["time_since_delivered"]),
            "deliveries": int(row["times_delivered"]),
            "consumer_live": str(row["consumer"]) in live,
        }
        for stream, stream_rows in zip(streams, replies, strict=True)
        for row in stream_rows
    ]
    view.pending_max_idle_ms = max((row["idle_ms"] for row in rows), default=0)
    rows.sort(key=lambda row: entry_key(row["id"]))
    view.pending = rows[:PENDING_LIMIT]


def _command_ids(data: str | None) -> dict[str, Any]:
    """task_id / run_id (or batch_id) of a command's `data` JSON, when it has them."""
    if not data:
        return {}
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {k: decoded[k] for k in ("task_id", "run_id", "batch_id") if k in decoded}


async def _dead_letters(redis: aioredis.Redis, view: ServiceView, keys: Keys) -> None:
    """The newest DEAD_LETTER_LIMIT dead letters over every stream's dead-letter stream (the
    pre-partition one's too: it outlives its stream), newest first."""
    sources = list(dict.fromkeys([*view.streams, *view.optional]))
    async with redis.pipeline(transaction=False) as pipe:
        for stream in sources:
            pipe.xrevrange(keys.dead_letters(stream), "+", "-", count=DEAD_LETTER_LIMIT)
        replies = cast(list[Entries], await pipe.execute())
    letters: list[dict[str, Any]] = [
        {
            "id": entry_id,
            "stream": stream,
            "reason": fields.get("reason", ""),
            "deliveries": bounded_int(fields.get("deliveries", ""), MAX_ID),
            "source_id": fields.get("source_id", ""),
            **_command_ids(fields.get("data")),
        }
        for stream, entries in zip(sources, replies, strict=True)
        for entry_id, fields in entries
    ]
    letters.sort(key=lambda letter: entry_key(letter["id"]), reverse=True)
    view.dead_letters = letters[:DEAD_LETTER_LIMIT]


async def _service(
    ctx: GatewayContext, service: str, streams: list[str], group: str, optional: list[str]
) -> ServiceView:
    registry = WorkerRegistry(ctx.redis, ctx.keys.namespace)
    view = ServiceView(service=service, streams=streams, group=group, optional=frozenset(optional))
    view.workers = await registry.live_workers(service)
    if await _group_info(ctx.redis, view):
        await _pending(ctx.redis, view)
    if not view.workers:
        view.notes.append(f"no live consumer in group {group}")
    await _dead_letters(ctx.redis, view, ctx.keys)
    return view


async def _failed_runs(ctx: GatewayContext) -> list[dict[str, Any]]:
    query = (
        sa.select(runs.c.run_id, runs.c.task_id, runs.c.status, runs.c.error, runs.c.finished_at)
        .where(runs.c.status.in_(FAILED_STATES))
        .order_by(sa.func.coalesce(runs.c.finished_at, runs.c.requested_at).desc())
        .limit(FAILED_RUNS_LIMIT)
    )
    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [
        {
            "run_id": row["run_id"],
            "task_id": row["task_id"],
            "status": row["status"],
            "error": row["error"],
            "finished_at": row["finished_at"],
            "finished": iso(row["finished_at"]),
        }
        for row in rows
    ]


async def _pending_runs(redis: aioredis.Redis, runner: ServiceView) -> dict[str, dict[str, Any]]:
    """run_id -> its pending entry (with the command's ids), for the pending entries shown;
    each entry is read from its own stream."""
    if not runner.pending:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for item in runner.pending:
            pipe.xrange(item["stream"], item["id"], item["id"], count=1)
        replies = cast(list[Entries], await pipe.execute())
    by_run: dict[str, dict[str, Any]] = {}
    for item, entries in zip(runner.pending, replies, strict=True):
        for _entry_id, fields in entries:
            run_id = _command_ids(fields.get("data")).get("run_id")
            if isinstance(run_id, str):
                by_run[run_id] = item
    return by_run


async def _waiting(ctx: GatewayContext, runner: ServiceView) -> list[dict[str, Any]]:
    claims = await queued_claims(ctx.engine, limit=WAITING_LIMIT)
    if not claims:
        return []
    pending_by_run = await _pending_runs(ctx.redis, runner)
    now = time.time()
    waiting: list[dict[str, Any]] = []
    for claim in claims:
        task_id, run_id = claim.task_id, claim.run_id
        holder = await ctx.locks.holder(task_id)
        pending = pending_by_run.get(run_id)
        if holder is not None and holder.run_id != run_id:
            reason = f"held by lock {holder.run_id} until {iso(holder.expires_at)}"
        elif pending is not None and not pending["consumer_live"]:
            reason = f"pending on dead consumer {pending['consumer']}"
        elif not runner.workers:
            reason = f"no live consumer in group {runner.group}"
        elif pending is not None:
            reason = f"delivered to live consumer {pending['consumer']}, starting"
        else:
            reason = f"queued behind {runner.lag if runner.lag is not None else '?'} commands"
        waiting.append(
            {
                "task_id": task_id,
                "run_id": run_id,
                "queued_at": iso(claim.updated_at),
                "claim_expires_at": iso(claim.expires_at),
                "claim_expired": claim.expires_at < now,
                "entry_id": None if pending is None else pending["id"],
                "reason": reason,
            }
        )
    return waiting


async def _parked(ctx: GatewayContext) -> dict[str, Any]:
    """The entries the projector parked, the most recent first: an operator fixes what refused
    them, then replays them (`libs.readmodels.replay`)."""
    entries = await list_parked(ctx.engine, limit=PARKED_LIMIT)
    return {
        "count": await count_parked(ctx.engine),
        "entries": [
            {
                "partition": entry.partition,
                "log_id": entry.log_id,
                "task_id": entry.task_id,
                "stream_id": entry.stream_id,
                "type": entry.type,
                "reason": entry.reason,
                "parked_at": entry.parked_at,
                "parked": iso(entry.parked_at),
            }
            for entry in entries
        ],
    }


async def jobs(request: Request) -> Response:
    ctx = context_of(request)
    legacy = [ctx.keys.legacy_run_commands]
    runner = await _service(ctx, "runner", runner_streams(ctx.keys), RUNNERS_GROUP, legacy)
    ingestor = await _service(ctx, "ingestor", [ctx.keys.ingest_commands], INGESTORS_GROUP, [])
    return JSONResponse(
        {
            "services": {"runner": runner.to_builtins(), "ingestor": ingestor.to_builtins()},
            "failed_runs": await _failed_runs(ctx),
            "waiting": await _waiting(ctx, runner),
            "parked": await _parked(ctx),
        }
    )
