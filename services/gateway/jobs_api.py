"""`GET /api/jobs`: the job / worker view.

Per service kind (runner, ingestor): the live workers from the worker registry, the consumer
group's lag, its pending entries (idle time, deliveries, whether their consumer is alive) and the
dead letters with their reasons; then the recent failed runs, for every queued run claim why it
is still waiting, and the log entries the projector parked (could not fold) with their reasons.
Every read is bounded (PENDING_LIMIT, DEAD_LETTER_LIMIT, ...)."""

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
from libs.events import INGESTORS_GROUP, RUNNERS_GROUP
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


def iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()


@dataclass
class ServiceView:
    service: str
    stream: str
    group: str
    workers: list[WorkerInfo] = field(default_factory=list)
    lag: int | None = 0
    pending_count: int = 0
    last_delivered_id: str = "0-0"
    notes: list[str] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def live_ids(self) -> set[str]:
        return {w.id for w in self.workers}

    def to_builtins(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "group": self.group,
            "workers": [
                {**msgspec.to_builtins(w), "started": iso(w.started_at), "seen": iso(w.seen_at)}
                for w in self.workers
            ],
            "lag": self.lag,
            "pending_count": self.pending_count,
            "last_delivered_id": self.last_delivered_id,
            "notes": self.notes,
            "pending": self.pending,
            "dead_letters": self.dead_letters,
        }


async def _group_info(redis: aioredis.Redis, view: ServiceView) -> bool:
    """Fill lag / pending count from XINFO GROUPS; False when the stream or group is missing."""
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(view.stream)
    except aioredis.ResponseError as exc:
        if "no such key" not in str(exc).lower():
            raise
        view.notes.append(f"stream {view.stream} does not exist yet")
        return False
    info = next((g for g in groups if g.get("name") == view.group), None)
    if info is None:
        view.notes.append(f"group {view.group} does not exist yet")
        return False
    lag = info.get("lag")
    view.lag = None if lag is None else int(lag)
    if view.lag is None:
        view.notes.append("lag unknown (entries deleted from the stream, or Redis < 7)")
    view.pending_count = int(info.get("pending") or 0)
    view.last_delivered_id = str(info.get("last-delivered-id") or "0-0")
    return True


async def _pending(redis: aioredis.Redis, view: ServiceView) -> None:
    rows = await redis.xpending_range(
        view.stream, view.group, min="-", max="+", count=PENDING_LIMIT
    )
    live = view.live_ids
    for row in rows:
        consumer = str(row["consumer"])
        view.pending.append(
            {
                "id": str(row["message_id"]),
                "consumer": consumer,
                "idle_ms": int(row["time_since_delivered"]),
                "deliveries": int(row["times_delivered"]),
                "consumer_live": consumer in live,
            }
        )


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


async def _dead_letters(redis: aioredis.Redis, view: ServiceView, dead_key: str) -> None:
    entries = cast(Entries, await redis.xrevrange(dead_key, "+", "-", count=DEAD_LETTER_LIMIT))
    for entry_id, fields in entries:
        deliveries = fields.get("deliveries", "")
        view.dead_letters.append(
            {
                "id": entry_id,
                "reason": fields.get("reason", ""),
                "deliveries": bounded_int(deliveries, MAX_ID),
                "source_id": fields.get("source_id", ""),
                **_command_ids(fields.get("data")),
            }
        )


async def _service(ctx: GatewayContext, service: str, stream: str, group: str) -> ServiceView:
    registry = WorkerRegistry(ctx.redis, ctx.keys.namespace)
    view = ServiceView(service=service, stream=stream, group=group)
    view.workers = await registry.live_workers(service)
    if await _group_info(ctx.redis, view):
        await _pending(ctx.redis, view)
    if not view.workers:
        view.notes.append(f"no live consumer in group {group}")
    await _dead_letters(ctx.redis, view, ctx.keys.dead_letters(stream))
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
    """run_id -> its pending entry (with the command's ids), for the pending entries shown."""
    if not runner.pending:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for item in runner.pending:
            pipe.xrange(runner.stream, item["id"], item["id"], count=1)
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
    runner = await _service(ctx, "runner", ctx.keys.run_commands, RUNNERS_GROUP)
    ingestor = await _service(ctx, "ingestor", ctx.keys.ingest_commands, INGESTORS_GROUP)
    return JSONResponse(
        {
            "services": {"runner": runner.to_builtins(), "ingestor": ingestor.to_builtins()},
            "failed_runs": await _failed_runs(ctx),
            "waiting": await _waiting(ctx, runner),
            "parked": await _parked(ctx),
        }
    )
