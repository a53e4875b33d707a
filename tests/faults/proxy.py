"""A TCP proxy in front of Valkey that the nemesis can make slow or cut: every service reaches
Redis through it, so its faults are what a congested or partitioned network does to all of them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tests.integration.tcpproxy import TcpProxy

__all__ = ["ChaosProxy"]


@dataclass
class ChaosProxy(TcpProxy):
    """Forwards TCP to Valkey on `upstream_port`. `delay_s` holds back every chunk, in both
    directions, that long (order kept); `cut()` drops every connection with the bytes in
    flight, and refuses new ones until `restore()`."""

    upstream_port: int
    delay_s: float = 0.0
    refusing: bool = False

    def cut(self) -> None:
        self.refusing = True
        for writer in list(self._writers):
            writer.transport.abort()  # an RST, what a dropped link looks like to both ends
        self._writers.clear()

    def restore(self) -> None:
        self.refusing = False
        self.delay_s = 0.0

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:  # Valkey is down: so is the link
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        self._start_pumps(
            self._pump(reader, up_writer, writer), self._pump(up_reader, writer, up_writer)
        )

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, other: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await source.read(65536):
                if self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (sink, other):
                writer.transport.abort()
                self._writers.discard(writer)
