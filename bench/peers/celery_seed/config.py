"""Where the seed peer finds its Redis, its SQLite file, the ingestor and the chat model (all
from the environment, so the app and every worker process agree), and its Redis key names."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["LOCK_TTL_MS", "READY_KEY", "SeedConfig", "channel", "lock_key"]

READY_KEY = "seed:worker:ready"  # set by the worker once it consumes
LOCK_TTL_MS = 600_000  # a run that never releases its lock blocks the task for 10 minutes


@dataclass(frozen=True)
class SeedConfig:
    redis_url: str
    db_path: str
    ingestor_url: str
    openai_base_url: str
    chat_model: str = "mock-gpt"
    retrieval_k: int = 4  # rag-poc's default RAGPOC_RETRIEVAL_K: both sides retrieve alike

    @classmethod
    def from_env(cls) -> SeedConfig:
        return cls(
            redis_url=os.environ["SEED_REDIS_URL"],
            db_path=os.environ["SEED_DB_PATH"],
            ingestor_url=os.environ["SEED_INGESTOR_URL"],
            openai_base_url=os.environ["SEED_OPENAI_BASE_URL"],
        )

    def env(self) -> dict[str, str]:
        """The variables `from_env` reads, for starting the app and the worker."""
        return {
            "SEED_REDIS_URL": self.redis_url,
            "SEED_DB_PATH": self.db_path,
            "SEED_INGESTOR_URL": self.ingestor_url,
            "SEED_OPENAI_BASE_URL": self.openai_base_url,
        }


def lock_key(task_id: int) -> str:
    return f"seed:lock:task:{task_id}"


def channel(task_id: int) -> str:
    """The pub/sub channel a task's progress messages go to."""
    return f"seed:events:task:{task_id}"
