"""Connecting to Redis/Valkey, a single server or a cluster, and what differs between the two.

Every component gets its client from `connect_redis`. On a cluster (`RAGPOC_REDIS_CLUSTER=1`,
or `auto` and the server says `cluster_enabled:1`) that is redis-py's `RedisCluster`: it
learns the slot map from the node named in the URL, sends each command to the master of its
key's slot and follows MOVED/ASK and failovers. It offers the same command methods as a
single-server client, so the rest of the code is typed against `redis.asyncio.Redis` and
written once; what a cluster cannot do is asked here:

- a multi-key command must keep its keys in one hash slot (every key of a task or partition
  carries the partition's `{pK}` tag, so each Lua script does): `read_groups` splits the
  streams a reader follows into the sets one XREAD may name together;
- a keyless command (WAITAOF) must go to the node that took the write: `node_of`;
- pub/sub is not in the cluster client: `pubsub_client` opens a plain client on one node
  (a cluster forwards PUBLISH to every node).
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Iterable
from typing import Any, cast

import redis
import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = [
    "connect_redis",
    "detect_cluster",
    "is_cluster",
    "node_of",
    "publish",
    "pubsub_client",
    "read_groups",
    "slot_of",
]

log = structlog.get_logger(__name__)

# A cluster client keeps a pool per node and fails a command with "Too many connections" when
# that pool is full (it has no blocking pool), so its per-node bound is the server's own
# `maxclients` rather than the single-server client's small waiting pool.
CLUSTER_MAX_CONNECTIONS_PER_NODE = 10_000


def _closed_under_us(exc: BaseException) -> bool:
    """An error raised inside redis-py's or asyncio's connection code: on a connection error
    the cluster client closes every node's connections and forgets the cluster (to discover it
    again), and a command running at that moment fails with an AttributeError, TypeError or
    RuntimeError from the closed transport, or an AttributeError on a node that is None,
    instead of a ConnectionError."""
    if not isinstance(exc, AttributeError | TypeError | RuntimeError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    if any(frame.filename.endswith(_CONNECTION_CODE) for frame in frames):
        return True
    forgotten = isinstance(exc, AttributeError) and "'NoneType'" in str(exc)
    return forgotten and frames[-1].filename.endswith("redis/asyncio/cluster.py")


_CONNECTION_CODE = (
    "redis/asyncio/connection.py",
    "asyncio/selector_events.py",
    "asyncio/streams.py",
)


class _ClusterPipeline(ClusterPipeline):
    """Sent once, as a command is (see `connect_redis`): redis-py's own `execute` loops
    `cluster_error_retry_attempts` times, and with 0 it never sends the pipeline at all."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        if not self._command_stack:
            return []
        client = self._client
        try:
            if client._initialize:
                await client.initialize()
            return await self._execute(
                client,
                self._command_stack,
                raise_on_error=raise_on_error,
                allow_redirections=allow_redirections,
            )
        except Exception as exc:
            if type(exc) in self.ERRORS_ALLOW_RETRY:
                await client.aclose()  # as redis-py does: the next command learns the cluster anew
            if _closed_under_us(exc):
                raise RedisConnectionError(f"connection closed under the pipeline: {exc}") from exc
            raise
        finally:
            self._command_stack = []


class _FailoverSafeCluster(RedisCluster):
    """A RedisCluster whose commands fail with ConnectionError (which every loop here rides
    out) when the client closed their connection under them (see `_closed_under_us`)."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except Exception as exc:
            if _closed_under_us(exc):
                raise RedisConnectionError(f"connection closed under the command: {exc}") from exc
            raise

    async def _determine_slot(self, command: str, *args: Any) -> int:
        """The slot of XREAD / XREADGROUP read off their STREAMS arguments: redis-py asks the
        server (COMMAND GETKEYS, one more round trip per read) for commands whose keys move."""
        if str(command).upper() in ("XREAD", "XREADGROUP"):
            slots = {self.keyslot(key) for key in _stream_keys(args)}
            if len(slots) == 1:
                return slots.pop()
        slot: int = await super()._determine_slot(command, *args)
        return slot

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        super().pipeline(transaction, shard_hint)  # its checks of the arguments
        return _ClusterPipeline(self)  # type: ignore[abstract]  # as RedisCluster.pipeline does


def _stream_keys(args: tuple[Any, ...]) -> list[Any]:
    """The stream names of XREAD / XREADGROUP arguments: the first half of what follows
    STREAMS (the second half is their ids)."""
    for index, arg in enumerate(args):
        word = arg.decode() if isinstance(arg, bytes) else str(arg)
        if word.upper() == "STREAMS":
            rest = args[index + 1 :]
            return list(rest[: len(rest) // 2])
    return []


def detect_cluster(url: str, timeout_s: float = 2.0) -> bool:
    """Whether the server at `url` is a cluster node (`INFO cluster`). An unreachable server
    counts as a single one, with a warning: set RAGPOC_REDIS_CLUSTER to not depend on it (a
    process that guessed wrong gets MOVED errors, exits, and asks again when restarted)."""
    try:
        with redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        ) as probe:
            info = cast(dict[str, Any], probe.info("cluster"))
    except redis.RedisError as exc:
        log.warning(
            "redis.cluster_detection_failed",
            error=f"{type(exc).__name__}",
            assumed="single server",
            hint="set RAGPOC_REDIS_CLUSTER=0 or 1",
        )
        return False
    return int(info.get("cluster_enabled", 0)) == 1


def connect_redis(
    url: str,
    max_connections: int = 64,
    socket_timeout: float = 5.0,
    name: str | None = None,
    *,
    cluster: bool | None = None,
) -> aioredis.Redis:
    """A client for `url`: a cluster client when `cluster` (None: ask the server).

    On a single server, the pool makes callers wait for a free connection (up to 30 s) instead
    of failing with "Too many connections" under a burst, and opens at most `max_connections`.
    `socket_timeout` must exceed the longest XREAD BLOCK made through the client. `name` is
    what `CLIENT LIST` shows for its connections (which service holds which connection)."""
    if cluster is None:
        cluster = detect_cluster(url)
    if cluster:
        client = _FailoverSafeCluster.from_url(
            url,
            # no silent resend after a connection error: the reply of a script that appended
            # an event may be what was lost, and a resend appends it twice (seen in the failover
            # test). A single-server client resends nothing either; every caller here decides
            # what a lost reply means (the consumer re-reads its pending entries, a 202 is
            # refused and undone, an outcome append is written once by its marker).
            cluster_error_retry_attempts=0,
            connection_error_retry_attempts=0,
            max_connections=max(max_connections, CLUSTER_MAX_CONNECTIONS_PER_NODE),
            decode_responses=True,
            health_check_interval=30,
            socket_connect_timeout=10,
            socket_timeout=socket_timeout,
            client_name=name,
        )
        # Same command methods (the mixins are shared); what differs is asked through the
        # functions of this module, so callers stay typed against one client.
        return cast(aioredis.Redis, client)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=30,
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=10,
        socket_timeout=socket_timeout,
        client_name=name,
    )
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() disconnects it


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def slot_of(key: str) -> int:
    return int(key_slot(key.encode()))


def read_groups(client: object, streams: Iterable[str]) -> list[list[str]]:
    """`streams` split into the sets one multi-key command (XREAD, XREADGROUP) may name
    together, each in the given order: all of them on a single server, one set per hash slot
    on a cluster (which refuses a command whose keys span slots, even on one node)."""
    ordered = list(streams)
    if not is_cluster(client):
        return [ordered] if ordered else []
    by_slot: dict[int, list[str]] = {}
    for stream in ordered:
        by_slot.setdefault(slot_of(stream), []).append(stream)
    return list(by_slot.values())


def node_of(client: aioredis.Redis, key: str) -> ClusterNode | None:
    """The cluster node serving `key` (None on a single server): where a keyless command that
    must follow a write of `key` (WAITAOF) is sent."""
    if not isinstance(client, RedisCluster):
        return None
    return cast(ClusterNode, client.get_node_from_key(key))


async def publish(client: aioredis.Redis, channel: str, message: str) -> None:
    """PUBLISH, which the cluster client lacks as a method: as a raw command it goes to the
    master of the channel's slot, and the cluster forwards it to every node."""
    await client.execute_command("PUBLISH", channel, message)  # type: ignore[no-untyped-call]


async def pubsub_client(client: aioredis.Redis, name: str | None = None) -> aioredis.Redis:
    """A client to subscribe with: `client` itself on a single server; on a cluster, a plain
    client on one of its nodes, picked at random (messages published anywhere in a cluster
    reach every node). The caller closes it when it is not `client`."""
    if not isinstance(client, RedisCluster):
        return client
    await client.initialize()
    node = random.choice(client.get_nodes())  # nosec B311: spreading load, not a secret
    kwargs = node.connection_kwargs
    return aioredis.Redis(
        host=node.host,
        port=node.port,
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        decode_responses=True,
        socket_connect_timeout=10,
        health_check_interval=30,
        client_name=name,
    )
