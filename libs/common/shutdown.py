"""Graceful shutdown: SIGTERM and SIGINT set an event that service loops watch."""

from __future__ import annotations

import asyncio
import signal

import structlog

__all__ = ["stop_on_signals"]

log = structlog.get_logger(__name__)


def stop_on_signals() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT; call from inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop(signum: int) -> None:
        log.info("shutdown.requested", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    return stop
