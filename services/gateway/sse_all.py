"""`GET /events`: every task's events as Server-Sent Events (for the jobs view and dashboards).

The log is partitioned, so one entry id cannot say where a client stopped. The `id:` of each
frame is the client's position in every partition, `p=<log id>` joined by commas (only
partitions that have events); a client that reconnects with it as Last-Event-ID (or
`?last_event_id=`) gets exactly what came after, per partition, then the live feed. A client
without one starts at the live tail; `?from=start` replays the whole log first.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import cast

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from libs.events import StoredEvent, decode_event, encode
from libs.events.store import Entries
from libs.readmodels import is_after
from services.gateway.context import GatewayContext, context_of
from services.gateway.errors import ApiError
from services.gateway.hub import ALL_TASKS, live_events
from services.gateway.sse import RETRY_MS

__all__ = ["all_events", "format_position", "parse_position"]

_PART = re.compile(r"^(\d+)=(\d+-\d+)$")


def format_position(position: dict[int, str]) -> str:
    return ",".join(f"{p}={i}" for p, i in sorted(position.items()) if i != "0-0")


def parse_position(raw: str, partitions: int) -> dict[int, str]:
    position = {p: "0-0" for p in range(partitions)}
    for part in filter(None, raw.split(",")):
        match = _PART.match(part)
        if match is None or int(match.group(1)) >= partitions:
            raise ApiError(422, f"Last-Event-ID is not a position of this feed: {raw!r}")
        position[int(match.group(1))] = match.group(2)
    return position


async def _tails(ctx: GatewayContext) -> dict[int, str]:
    position = {}
    for p in range(ctx.keys.partitions):
        newest = cast(Entries, await ctx.redis.xrevrange(ctx.keys.partition_log(p), count=1))
        position[p] = newest[0][0] if newest else "0-0"
    return position


async def _replay(ctx: GatewayContext, position: dict[int, str]) -> list[tuple[int, StoredEvent]]:
    found: list[tuple[int, StoredEvent]] = []
    for p, after in position.items():
        start = "-" if after == "0-0" else f"({after}"
        entries = cast(Entries, await ctx.redis.xrange(ctx.keys.partition_log(p), start, "+"))
        for entry_id, fields in entries:
            stored = StoredEvent(
                entry_id, fields.get("sid", entry_id), decode_event(fields["data"])
            )
            found.append((p, stored))
    return sorted(found, key=lambda item: _key(item[1].entry_id))


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def _frame(position: dict[int, str], stored: StoredEvent) -> str:
    tag = type(stored.event).__struct_config__.tag
    data = encode(stored.event).decode()
    return f"id: {format_position(position)}\nevent: {tag}\ndata: {data}\n\n"


async def _frames(ctx: GatewayContext, position: dict[int, str]) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    subscription = ctx.hub.subscribe(ALL_TASKS)
    try:
        for partition, stored in await _replay(ctx, position):
            position[partition] = stored.entry_id
            yield _frame(position, stored)
        async for live in live_events(subscription, ctx.settings.sse_heartbeat_s):
            if live is None:
                yield ": heartbeat\n\n"
                continue
            partition = ctx.keys.partition_of(live.event.task_id)
            if is_after(live.entry_id, position[partition]):
                position[partition] = live.entry_id
                yield _frame(position, live)
    finally:
        ctx.hub.unsubscribe(subscription)


async def all_events(request: Request) -> Response:
    ctx = context_of(request)
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id", "")
    if raw:
        position = parse_position(raw, ctx.keys.partitions)
    elif request.query_params.get("from") == "start":
        position = {p: "0-0" for p in range(ctx.keys.partitions)}
    else:
        position = await _tails(ctx)
    return StreamingResponse(
        _frames(ctx, position),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
