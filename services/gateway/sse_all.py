"""`GET /events`: every task's events as Server-Sent Events (for the jobs view and dashboards).

The log is partitioned, so one entry id cannot say where a client stopped. The `id:` of each
frame is the client's position in every partition, `p=<log id>` joined by commas (only
partitions that have events); a client that reconnects with it as Last-Event-ID (or
`?last_event_id=`) gets exactly what came after, per partition, then the live feed. A client
without one starts at the live tail; `?from=start` replays the whole log first. The replay takes
what Redis trimmed from the SQL archive, page by page, merged in entry-id order.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from libs.events import StoredEvent
from libs.events.ids import entry_key, is_after
from libs.events.store import last_generated_id
from libs.readmodels.archive import partition_events
from services.gateway.context import GatewayContext, context_of
from services.gateway.errors import ApiError
from services.gateway.hub import ALL_TASKS, live_events
from services.gateway.sse import RETRY_MS, last_event_id, sse_frame
from services.gateway.validation import bounded_int, parse_entry_id, query_choice, shown

__all__ = ["all_events", "format_position", "parse_position"]

PAGE = 500


def format_position(position: dict[int, str]) -> str:
    return ",".join(f"{p}={i}" for p, i in sorted(position.items()) if i != "0-0")


def parse_position(raw: str, partitions: int) -> dict[int, str]:
    """A Last-Event-ID of this feed: `<partition>=<entry id>` joined by commas, each partition
    at most once (400 otherwise, before the stream opens)."""
    position = {p: "0-0" for p in range(partitions)}
    seen: set[int] = set()
    for part in raw.split(","):
        number, equals, entry = part.partition("=")
        partition = bounded_int(number, partitions - 1)
        entry_id = parse_entry_id(entry)
        if not equals or partition is None or entry_id is None or partition in seen:
            raise ApiError(
                400,
                f"Last-Event-ID is not a position of this feed: {shown(raw)}; it is the `id:` "
                f"of a frame, <partition>=<ms>-<seq> joined by commas, partitions 0 to "
                f"{partitions - 1} each at most once",
            )
        seen.add(partition)
        position[partition] = entry_id
    return position


async def _tails(ctx: GatewayContext) -> dict[int, str]:
    """Where every partition log stands now: its last-generated id, which an emptied (trimmed)
    log still knows."""
    return {
        p: await last_generated_id(ctx.redis, ctx.keys.partition_log(p))
        for p in range(ctx.keys.partitions)
    }


async def _partition_replay(
    ctx: GatewayContext, partition: int, after: str
) -> AsyncIterator[StoredEvent]:
    """The partition's events after `after`, oldest first, a page at a time (archive, then
    Redis)."""
    while True:
        ms, seq = entry_key(after)
        page = await partition_events(
            ctx.store, ctx.engine, partition, low=(ms, seq + 1), limit=PAGE
        )
        for stored in page:
            yield stored
        if len(page) < PAGE:
            return
        after = page[-1].entry_id


async def _replay(
    ctx: GatewayContext, position: dict[int, str]
) -> AsyncIterator[tuple[int, StoredEvent]]:
    """Every partition's events after its position, merged in entry-id order."""
    replays = {p: _partition_replay(ctx, p, after) for p, after in position.items()}
    heads: list[tuple[tuple[int, int], int, StoredEvent]] = []
    for p, replay in replays.items():
        if (first := await anext(replay, None)) is not None:
            heapq.heappush(heads, (entry_key(first.entry_id), p, first))
    while heads:
        _, p, stored = heapq.heappop(heads)
        yield p, stored
        if (following := await anext(replays[p], None)) is not None:
            heapq.heappush(heads, (entry_key(following.entry_id), p, following))


async def _frames(ctx: GatewayContext, position: dict[int, str]) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    subscription = ctx.hub.subscribe(ALL_TASKS)
    try:
        async for partition, stored in _replay(ctx, dict(position)):
            position[partition] = stored.entry_id
            yield sse_frame(stored, frame_id=format_position(position))
        async for batch in live_events(subscription, ctx.settings.sse_heartbeat_s):
            if batch is None:
                yield ": heartbeat\n\n"
                continue
            frames = []
            for live in batch:
                partition = ctx.keys.partition_of(live.stored.event.task_id)
                if is_after(live.stored.entry_id, position[partition]):
                    position[partition] = live.stored.entry_id
                    frames.append(sse_frame(live.stored, live.data, format_position(position)))
            if frames:  # one write for the whole batch
                yield "".join(frames)
    finally:
        ctx.hub.unsubscribe(subscription)


async def all_events(request: Request) -> Response:
    ctx = context_of(request)
    raw = last_event_id(request)
    start = query_choice(request, "from", ("start",))
    if raw:
        position = parse_position(raw, ctx.keys.partitions)
    elif start is not None:
        position = {p: "0-0" for p in range(ctx.keys.partitions)}
    else:
        position = await _tails(ctx)
    return StreamingResponse(
        _frames(ctx, position),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
