"""What the gateway's endpoints share: clients built once in the lifespan, and the durable
write a 202 waits for (`DurableAccept`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cached_property

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode
from redis.typing import EncodableT, FieldT
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from libs.commandside.idempotency import IdempotencyKeys
from libs.commandside.locks import TaskLocks
from libs.common import Settings
from libs.common.errors import RagpocError
from libs.events import Appended, EventStore, Keys
from libs.events.redis_conn import node_of
from services.gateway.hub import EventHub
from services.gateway.projection_watch import ProjectionWatch

__all__ = ["DurableAccept", "GatewayContext", "NotDurable", "context_of"]

log = structlog.get_logger(__name__)

# How long a durable write waits for Valkey's fsync (WAITAOF's timeout): below the client's
# 5 s socket timeout, far above the wait measured here (`always`: none, the write was fsynced
# before its reply; `everysec`: until the next fsync, 32 ms median, 100 ms p99).
DURABLE_TIMEOUT_MS = 3_000
PROBE_TIMEOUT_MS = 2_000


class NotDurable(RagpocError):
    """Valkey did not confirm a write on disk in time (the write itself may have happened)."""


class DurableAccept:
    """Writes answered only once Valkey has them on disk: the write and `WAITAOF 1 0` (one
    local fsync, no replicas) go in one non-transactional pipeline, so on one connection.
    WAITAOF waits for that connection's writes; the AOF is one ordered log, so every write made
    before, from any connection, is on disk too.

    Whether the server can is found out once (`probe`): WAITAOF needs Valkey/Redis >= 7.2
    with AOF on, and an `appendfsync` that fsyncs (with `no` it would wait out every timeout).
    When it cannot, or RAGPOC_DURABLE_ACCEPT is off, that is logged once with the reason and
    writes are answered once they are in memory, as before durable accept existed."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, keys: Keys) -> None:
        self.redis = redis
        self.replicas = settings.durable_replicas
        self.available: bool | None = None if settings.durable_accept else False
        self.reason = "" if settings.durable_accept else "RAGPOC_DURABLE_ACCEPT is off"
        self._probe_key = f"{keys.namespace}:durable-accept:probe"
        self._probing = asyncio.Lock()
        self._logged = False

    async def probe(self) -> bool:
        """Whether writes are made durable; asks the server the first time only (again after
        a probe that failed to reach it)."""
        if self.available is None:
            async with self._probing:
                if self.available is None:
                    self.available, self.reason = await self._ask_server()
        if not self._logged:
            self._logged = True
            if self.available:
                log.info("gateway.durable_accept", available=True, how=self.reason)
            else:
                log.warning("gateway.durable_accept", available=False, reason=self.reason)
        return self.available

    async def _ask_server(self) -> tuple[bool, str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._probe_key, "1", px=60_000)  # a write of this connection to wait for
            _keyless(pipe, node_of(self.redis, self._probe_key), "WAITAOF", 1, 0, PROBE_TIMEOUT_MS)
            _, acked = await pipe.execute(raise_on_error=False)
        if isinstance(acked, Exception):
            return False, f"the server refused WAITAOF: {acked}"
        if int(acked[0]) < 1:
            return False, (
                f"AOF is on but a write was not fsynced within {PROBE_TIMEOUT_MS} ms "
                "(appendfsync no?)"
            )
        return True, "WAITAOF 1 0 after each command (AOF fsync confirmed)"

    async def xadd(self, stream: str, fields: dict[FieldT, EncodableT]) -> str:
        """XADD, returning once the entry is on disk (`NotDurable` if Valkey did not confirm
        it within DURABLE_TIMEOUT_MS), or at once when durable accept is unavailable. With
        RAGPOC_DURABLE_REPLICAS, also once that many replicas have it."""
        if not await self.probe():
            return str(await self.redis.xadd(stream, fields))
        node = node_of(self.redis, stream)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(stream, fields)
            _keyless(pipe, node, "WAITAOF", 1, 0, DURABLE_TIMEOUT_MS)
            if self.replicas:
                _keyless(pipe, node, "WAIT", self.replicas, DURABLE_TIMEOUT_MS)
            entry_id, acked, *replicated = await pipe.execute(raise_on_error=False)
        if isinstance(entry_id, Exception):
            raise entry_id
        if isinstance(acked, Exception):  # AOF turned off since the probe, or another server
            self.available, self.reason = False, f"the server refused WAITAOF: {acked}"
            log.warning("gateway.durable_accept", available=False, reason=self.reason)
            return str(entry_id)
        if int(acked[0]) < 1:
            raise NotDurable(
                f"Valkey did not confirm the write on disk within {DURABLE_TIMEOUT_MS} ms"
            )
        if replicated and (isinstance(replicated[0], Exception) or replicated[0] < self.replicas):
            raise NotDurable(
                f"{replicated[0]} of the {self.replicas} replica(s) RAGPOC_DURABLE_REPLICAS asks "
                f"for confirmed the write within {DURABLE_TIMEOUT_MS} ms"
            )
        return str(entry_id)


def _keyless(pipe: Pipeline, node: ClusterNode | None, *command: str | int) -> None:
    """A command that names no key (WAITAOF, WAIT) in `pipe`, after the write it waits for:
    on a cluster it is sent to the node that took the write (`node`), as the pipeline's
    commands for one node go over one connection, in order.

    Replicas are asked with WAIT (they have the write), not WAITAOF's second count (they have
    it on disk): a replica reports its fsyncs only once a second, so that count cost every 202
    a second, where WAIT answers at once. The write is then on the master's disk and in a
    replica's memory: no single node's failure loses it."""
    if node is None:
        pipe.execute_command(*command)
    else:
        pipe.execute_command(*command, target_nodes=node)


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
    projection: ProjectionWatch

    @cached_property
    def idempotency(self) -> IdempotencyKeys:
        return IdempotencyKeys(self.redis, self.keys, self.settings.idempotency_ttl_s)

    @cached_property
    def durability(self) -> DurableAccept:
        return DurableAccept(self.redis, self.settings, self.keys)

    async def wait_projected(self, appended: Appended, bound_s: float = 3.0) -> bool:
        """Wait until the projector has passed `appended`, so the caller reads its own write.
        Returns False when the bound passed first (the write is safe in the log either way)."""
        return await self.projection.wait(appended, bound_s)


def context_of(request: Request) -> GatewayContext:
    context: GatewayContext = request.state.ctx
    return context
