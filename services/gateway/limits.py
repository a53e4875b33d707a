"""What one client can take from a gateway: open streams, `?wait` waiters, runs per minute.

- **Concurrency caps**: Server-Sent Events streams (`/events...`) and `POST /run-agents?wait=`
  requests each hold a slot for as long as they last; when a kind's slots are all taken the
  request gets a 503 with `Retry-After` at once, instead of the gateway running out of file
  descriptors or memory for everybody.
- **Run rate per token**: `POST /run-agents` counts against its token's budget of runs per
  minute, a fixed window counted in Redis (`INCR` + `PEXPIRE` in one round trip), so every
  gateway replica shares it. Over the budget: 429 with `Retry-After` (the seconds left in the
  window). Requests without a token name (auth off) are not limited: that is one trusted user
  on loopback.

Both are pure ASGI middleware, so streams pass through unbuffered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.metrics import LIMITED_REQUESTS

__all__ = ["ConcurrencyCaps", "RunRateLimit", "send_json_error"]

log = structlog.get_logger(__name__)

RUN_PATH = "/run-agents"
WINDOW_S = 60


async def send_json_error(
    send: Send, status: int, message: str, retry_after_s: int, **detail: object
) -> None:
    body = json.dumps({"error": {"status": status, "message": message, **detail}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after_s).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _is_waiter(scope: Scope) -> bool:
    if scope["path"] != RUN_PATH or scope["method"] != "POST":
        return False
    return "wait" in parse_qs(scope.get("query_string", b"").decode("latin-1"))


@dataclass
class _Slots:
    kind: str
    limit: int
    taken: int = 0


class ConcurrencyCaps:
    """At most `max_streams` SSE streams and `max_waiters` `?wait` requests at once (0: no cap)."""

    def __init__(self, app: ASGIApp, max_streams: int, max_waiters: int) -> None:
        self.app = app
        self.streams = _Slots("sse", max_streams)
        self.waiters = _Slots("wait", max_waiters)

    def _slots_for(self, scope: Scope) -> _Slots | None:
        if scope["type"] != "http":
            return None
        if scope["path"].startswith("/events"):
            return self.streams
        return self.waiters if _is_waiter(scope) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slots = self._slots_for(scope)
        if slots is None or slots.limit <= 0:
            await self.app(scope, receive, send)
            return
        if slots.taken >= slots.limit:
            LIMITED_REQUESTS.labels(reason=f"{slots.kind}_full").inc()
            what = "event streams" if slots is self.streams else "waiting run requests"
            await send_json_error(
                send,
                503,
                f"this gateway already serves {slots.limit} {what}: retry shortly, or ask "
                "another replica",
                retry_after_s=5,
                limit=slots.limit,
            )
            return
        slots.taken += 1
        try:
            await self.app(scope, receive, send)
        finally:
            slots.taken -= 1


class RunRateLimit:
    """`POST /run-agents` at most `runs_per_minute` times per token name and minute (0: off).

    `principal_of(scope)` names the caller (None: not limited); `redis_of(scope)` is the
    gateway's Redis client."""

    def __init__(
        self,
        app: ASGIApp,
        runs_per_minute: int,
        namespace: str,
        principal_of: Callable[[Scope], str | None],
        redis_of: Callable[[Scope], aioredis.Redis],
    ) -> None:
        self.app = app
        self.runs_per_minute = runs_per_minute
        self.namespace = namespace
        self.principal_of = principal_of
        self.redis_of = redis_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.runs_per_minute <= 0
            or scope["type"] != "http"
            or scope["path"] != RUN_PATH
            or scope["method"] != "POST"
        ):
            await self.app(scope, receive, send)
            return
        name = self.principal_of(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        now = time.time()
        window = int(now // WINDOW_S)
        key = f"{self.namespace}:ratelimit:run:{name}:{window}"
        try:
            async with self.redis_of(scope).pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, WINDOW_S * 1000 * 2)
                count, _ = await pipe.execute()
        except RedisError as exc:
            # Redis away: the request goes on uncounted, and its admission (which needs Redis
            # as well) answers 503 itself if Redis is still away
            log.warning("limits.run_rate_unchecked", token=name, error=type(exc).__name__)
            await self.app(scope, receive, send)
            return
        if int(count) > self.runs_per_minute:
            retry_after = max(1, int((window + 1) * WINDOW_S - now + 0.999))
            LIMITED_REQUESTS.labels(reason="run_rate").inc()
            log.info("limits.run_rate", token=name, count=int(count), limit=self.runs_per_minute)
            await send_json_error(
                send,
                429,
                f"token {name!r} has asked for {self.runs_per_minute} runs this minute, its "
                f"limit: retry in {retry_after} s",
                retry_after_s=retry_after,
                limit=self.runs_per_minute,
            )
            return
        await self.app(scope, receive, send)
