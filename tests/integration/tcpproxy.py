"""The shared part of the tests' TCP proxies in front of Redis/Valkey: listen on a free port,
track every connection's pumps and writers, and close them all on exit. A subclass says what
happens on each connection (`_connect`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Self

from tests.conftest import free_port

__all__ = ["TcpProxy"]


@dataclass(kw_only=True)
class TcpProxy:
    port: int = field(default_factory=free_port)
    _server: asyncio.Server | None = None
    _pumps: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def _start_pumps(self, *pumps: Coroutine[Any, Any, None]) -> None:
        """Run a connection's pumps as tasks the proxy cancels on exit."""
        for pump in pumps:
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)
