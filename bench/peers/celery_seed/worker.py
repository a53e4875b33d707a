"""The seed peer's Celery app and its one task, `run_agent`: the same RAG run as rag-poc's
runner (the ingestor's `POST /search`, which embeds the question through mockai and searches
Qdrant, then a streamed chat completion with rag-poc's prompt), with progress published over
Redis pub/sub, then the task marked done and its lock released.

Blocking clients throughout, as a Celery task is written: they suit every pool (prefork,
threads, and gevent, which patches their sockets).

    celery -A bench.peers.celery_seed.worker worker --pool threads --concurrency 32
"""

from __future__ import annotations

import functools
import json
import threading
import time
from typing import Any

import httpx
import msgspec
import redis
from celery import Celery  # type: ignore[import-untyped]  # ships no type information
from celery.signals import worker_ready  # type: ignore[import-untyped]
from openai import OpenAI

from bench.peers.celery_seed import db
from bench.peers.celery_seed.config import READY_KEY, SeedConfig, channel, lock_key
from libs.events import RetrievedChunk
from services.runner.agent import SYSTEM_PROMPT, build_prompt

__all__ = ["RELEASE", "app", "release_lock", "run_agent"]

RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

CONFIG = SeedConfig.from_env()
app = Celery("celery_seed", broker=CONFIG.redis_url)
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)


class _SearchReply(msgspec.Struct):
    hits: list[RetrievedChunk]


class _Clients:
    """One set of connections per worker process, made on first use (after the fork)."""

    def __init__(self) -> None:
        self.redis = redis.Redis.from_url(CONFIG.redis_url)
        self.http = httpx.Client(timeout=60, trust_env=False)
        self.llm = OpenAI(base_url=CONFIG.openai_base_url, api_key="seed", max_retries=0)


_clients_lock = threading.Lock()


@functools.cache
def _make_clients() -> _Clients:
    return _Clients()


def clients() -> _Clients:
    with _clients_lock:  # the threads pool's first tasks start at once
        return _make_clients()


def release_lock(client: redis.Redis, task_id: int, token: str) -> None:
    """Delete the task's lock if it still holds this run's token."""
    client.eval(RELEASE, 1, lock_key(task_id), token)


def _publish(task_id: int, event: str, **data: Any) -> None:
    message = json.dumps({"type": event, "task_id": task_id, "at": time.time(), **data})
    clients().redis.publish(channel(task_id), message)


def _retrieve(question: str) -> list[RetrievedChunk]:
    reply = clients().http.post(
        f"{CONFIG.ingestor_url}/search", json={"query": question, "k": CONFIG.retrieval_k}
    )
    reply.raise_for_status()
    return msgspec.json.decode(reply.content, type=_SearchReply).hits


def _ask_model(task_id: int, question: str, context: list[RetrievedChunk]) -> str:
    stream = clients().llm.chat.completions.create(
        model=CONFIG.chat_model,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": build_prompt(question, context)},
        ],
        stream=True,
    )
    parts: list[str] = []
    for chunk in stream:
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            _publish(task_id, "llm.delta", index=len(parts), text=text)
            parts.append(text)
    return "".join(parts)


def _run_agent(task_id: int, token: str, hold_seconds: float = 0.0) -> None:
    """One agent run of `task_id`, admitted with lock `token`."""
    _publish(task_id, "run.started")
    try:
        if hold_seconds > 0:  # keeps the task running, for measuring refusals
            time.sleep(hold_seconds)
        question = db.question(CONFIG.db_path, task_id)
        answer = _ask_model(task_id, question, _retrieve(question))
    except Exception as exc:
        db.finish(CONFIG.db_path, task_id, "failed", None)
        release_lock(clients().redis, task_id, token)
        _publish(task_id, "run.failed", reason=f"{type(exc).__name__}: {exc}")
        raise
    db.finish(CONFIG.db_path, task_id, "done", answer)
    release_lock(clients().redis, task_id, token)
    _publish(task_id, "run.completed", chars=len(answer))


run_agent = app.task(name="run_agent")(_run_agent)


def _announce_ready(**_: Any) -> None:
    """Tells whoever started the worker that it consumes now, so starting it needs no INFO
    logging (which would also log every task)."""
    with redis.Redis.from_url(CONFIG.redis_url) as client:
        client.set(READY_KEY, "1")


worker_ready.connect(_announce_ready)
