"""How a consumer-group member reads (`ConsumerOptions`) and what it is called."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from libs.common.settings import Settings

__all__ = ["ConsumerOptions", "consumer_name"]


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    block_ms: int = 1000
    min_idle_ms: int = 30_000
    max_deliveries: int = 5
    concurrency: int = 1  # entries handled at once
    drain_s: float = 30.0  # on stop, how long the entries in hand may take to finish

    @classmethod
    def from_settings(cls, settings: Settings, *, concurrency: int = 1) -> ConsumerOptions:
        """The RAGPOC_CONSUMER_* settings."""
        return cls(
            block_ms=settings.consumer_block_ms,
            min_idle_ms=settings.consumer_min_idle_ms,
            max_deliveries=settings.consumer_max_deliveries,
            concurrency=concurrency,
            drain_s=settings.consumer_drain_s,
        )
