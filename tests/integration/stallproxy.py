"""A TCP proxy in front of Redis/Valkey that can stall: while stalled, what clients send is held
back (the server never sees it), so their commands time out as on a congested or partitioned
network; once it flows again, what a still-connected client sent is delivered, and what a client
that gave up (closed) sent is dropped with it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.integration.tcpproxy import TcpProxy

__all__ = ["StallProxy"]


@dataclass(eq=False)  # hashed by identity: one per connection
class _Link:
    upstream: asyncio.StreamWriter
    held: list[bytes] = field(default_factory=list)
    closed: bool = False


@dataclass
class StallProxy(TcpProxy):
    upstream_url: str
    stalled: bool = False
    held_requests: int = 0  # how many reads were held back while stalled
    _links: set[_Link] = field(default_factory=set)

    def stall(self) -> None:
        self.stalled = True

    def flow(self) -> None:
        """Deliver what live clients sent meanwhile, then forward as it comes."""
        for link in self._links:
            if link.held and not link.closed:
                link.upstream.write(b"".join(link.held))
            link.held.clear()
        self.stalled = False

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = urlsplit(self.upstream_url)
        up_reader, up_writer = await asyncio.open_connection(upstream.hostname, upstream.port)
        self._writers |= {writer, up_writer}
        link = _Link(up_writer)
        self._links.add(link)
        self._start_pumps(
            self._requests(reader, link, writer), self._replies(up_reader, writer, link)
        )

    async def _requests(
        self, client: asyncio.StreamReader, link: _Link, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await client.read(65536):
                if self.stalled:
                    link.held.append(data)
                    self.held_requests += 1
                    continue
                link.upstream.write(data)
                await link.upstream.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._close(link, writer)

    async def _replies(
        self, server: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while data := await server.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._close(link, writer)

    def _close(self, link: _Link, writer: asyncio.StreamWriter) -> None:
        link.closed = True
        link.held.clear()
        self._links.discard(link)
        for each in (writer, link.upstream):
            each.close()
            self._writers.discard(each)
