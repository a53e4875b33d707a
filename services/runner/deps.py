"""What a runner's run needs: its settings, the event store, the task locks, the database, the
chat model and HTTP clients, the cluster-wide run counters, and the worker's name."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from openai import AsyncOpenAI
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.commandside.locks import TaskLocks
from libs.common import Settings
from libs.events import EventStore
from libs.events.stats import RunStats

__all__ = ["RunDeps"]


@dataclass(frozen=True)
class RunDeps:
    settings: Settings
    store: EventStore
    locks: TaskLocks
    engine: AsyncEngine
    llm: AsyncOpenAI
    http: httpx.AsyncClient
    stats: RunStats
    worker: str  # names the runner in its lock tokens and `run.started`
