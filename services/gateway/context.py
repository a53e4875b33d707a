"""What the gateway's endpoints share: clients built once in the lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cached_property

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from libs.commandside.idempotency import IdempotencyKeys
from libs.commandside.locks import TaskLocks
from libs.common import Settings
from libs.events import Appended, EventStore, Keys
from libs.events.ids import is_after
from libs.readmodels import projected_position
from services.gateway.hub import EventHub

__all__ = ["GatewayContext", "context_of"]


@dataclass(frozen=True)
class GatewayContext:
    settings: Settings
    keys: Keys
    redis: aioredis.Redis
    store: EventStore
    locks: TaskLocks
    engine: AsyncEngine
    # SSE followers block in XREAD for up to 15 s each; they get their own client so they can
    # never exhaust the pool that API requests wait on.
    follower: EventStore
    hub: EventHub

    @cached_property
    def idempotency(self) -> IdempotencyKeys:
        return IdempotencyKeys(self.redis, self.keys, self.settings.idempotency_ttl_s)

    async def wait_projected(self, appended: Appended, bound_s: float = 3.0) -> bool:
        """Wait until the projector has passed `appended`, so the caller reads its own write.
        Returns False when the bound passed first (the write is safe in the log either way)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound_s
        delay = 0.005
        while True:
            position = await projected_position(self.engine, appended.partition)
            if position is not None and not is_after(appended.log_id, position):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)


def context_of(request: Request) -> GatewayContext:
    context: GatewayContext = request.state.ctx
    return context
