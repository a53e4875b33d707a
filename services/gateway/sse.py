"""`GET /events/tasks/{id}`: Server-Sent Events replaying a task's stream, then following it.

`id:` is the task-stream entry id, `event:` the event type, `data:` the JSON event. A client that
reconnects with `Last-Event-ID` (or `?last_event_id=`) gets only what came after it. When Redis
or the database fails during the replay, the stream ends and the client's reconnect resumes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from libs.common.backoff import is_transient
from libs.events import StoredEvent, encode
from libs.events.ids import is_after
from libs.readmodels import get_task
from libs.readmodels.archive import task_history
from services.gateway.context import GatewayContext, context_of
from services.gateway.errors import ApiError
from services.gateway.hub import LiveEvent, live_events
from services.gateway.tasks_api import path_task_id
from services.gateway.validation import resume_entry_id

__all__ = ["last_event_id", "resume_point", "task_events"]

log = structlog.get_logger(__name__)

RETRY_MS = 2000


def sse_frame(stored: StoredEvent, data: str | None = None, frame_id: str | None = None) -> str:
    """The frame of an event: `id:` its task-stream id unless `frame_id` is given, `data:` its
    JSON (`data` when the hub has already encoded it)."""
    event_type = type(stored.event).__struct_config__.tag
    data = encode(stored.event).decode() if data is None else data
    frame_id = stored.stream_id if frame_id is None else frame_id
    return f"id: {frame_id}\nevent: {event_type}\ndata: {data}\n\n"


def last_event_id(request: Request) -> str:
    """The client's Last-Event-ID header, else its `?last_event_id=` ("" when neither)."""
    header = request.headers.get("last-event-id")
    if header:
        return header
    values = request.query_params.getlist("last_event_id")
    if len(values) > 1:
        raise ApiError(400, f"Last-Event-ID (?last_event_id=) is given {len(values)} times")
    return values[0] if values else ""


def resume_point(request: Request) -> str:
    """Where the client's stream resumes: after its Last-Event-ID, checked before the stream
    opens (400), or from the start."""
    last = last_event_id(request)
    return resume_entry_id(last) if last else "0-0"


def shared_frame(live: LiveEvent) -> bytes:
    """The live event's frame, built once for all the clients of its task."""
    if live.frame is None:
        live.frame = sse_frame(live.stored, live.data).encode()
    return live.frame


async def event_frames(ctx: GatewayContext, task_id: int, after: str) -> AsyncIterator[str | bytes]:
    yield f"retry: {RETRY_MS}\n\n"
    subscription = ctx.hub.subscribe(task_id)  # before the replay, so nothing falls between
    try:
        # from the SQL archive for whatever Redis trimmed, then from the stream
        try:
            history = await task_history(ctx.store, ctx.engine, task_id, after=after)
        except (RedisError, DBAPIError) as exc:
            if isinstance(exc, RedisError) and not is_transient(exc):
                raise
            # the response has started: end it; the client reconnects after `retry:` with
            # Last-Event-ID, and the replay starts again from there
            log.warning("sse.replay_interrupted", task_id=task_id, error=type(exc).__name__)
            return
        for stored in history:
            after = stored.stream_id
            yield sse_frame(stored)
        async for batch in live_events(subscription, ctx.settings.sse_heartbeat_s):
            if batch is None:
                yield ": heartbeat\n\n"
                continue
            frames = []
            for live in batch:
                if is_after(live.stored.stream_id, after):
                    after = live.stored.stream_id
                    frames.append(shared_frame(live))
            if frames:  # one write for the whole batch
                yield b"".join(frames)
    finally:
        ctx.hub.unsubscribe(subscription)


async def task_events(request: Request) -> Response:
    ctx = context_of(request)
    task_id = path_task_id(request)
    after = resume_point(request)
    if await get_task(ctx.engine, task_id) is None and not await ctx.redis.exists(
        ctx.keys.task_events(task_id)
    ):
        raise ApiError(404, f"task {task_id} does not exist")
    return StreamingResponse(
        event_frames(ctx, task_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
