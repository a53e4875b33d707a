"""Liveness (`/health`: the process answers) and readiness (`/ready`: what this gateway needs
works now).

`/ready` checks Redis (PING), the database (SELECT 1) and the SSE hub (following the partition
logs), each bounded by `CHECK_TIMEOUT_S`, and answers 200 when all are "ok", else 503 with the
same body: each part's state, and `degraded` naming the parts that are not ok. A failing part
is named with the kind of error only: the exception's text (which may hold a host, a user or a
query) goes to the gateway's log, not to whoever can reach `/ready`, which needs no token.
A load balancer takes the gateway out while it is degraded; `/health` stays 200, so nothing
restarts a process that is only waiting for Redis to come back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.gateway.context import GatewayContext, context_of

__all__ = ["CHECK_TIMEOUT_S", "health", "ready"]

log = structlog.get_logger(__name__)

CHECK_TIMEOUT_S = 2.0


async def health(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _state(part: str, check: Callable[[], Awaitable[object]]) -> str:
    """ "ok", or what went wrong (a check that hangs counts as unavailable)."""
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"unavailable: no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:
        log.warning("ready.check_failed", part=part, error=f"{type(exc).__name__}: {exc}")
        return f"unavailable: {type(exc).__name__}"
    return "ok"


async def _select_one(ctx: GatewayContext) -> None:
    async with ctx.engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))


async def ready(request: Request) -> Response:
    ctx = context_of(request)
    redis, database = await asyncio.gather(
        _state("redis", lambda: ctx.redis.ping()), _state("database", lambda: _select_one(ctx))
    )
    hub_problem = ctx.hub.problem
    checks = {"redis": redis, "database": database, "hub": hub_problem or "ok"}
    degraded = [part for part, state in checks.items() if state != "ok"]
    body: dict[str, object] = {"status": "unavailable" if degraded else "ok", **checks}
    if degraded:
        body["degraded"] = degraded
    return JSONResponse(body, 503 if degraded else 200)
