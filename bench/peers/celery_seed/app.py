"""The seed peer's HTTP side (Starlette, served by uvicorn): create and list tasks, admit a run
behind the seed's three layers of duplicate protection, and stream a task's progress as
Server-Sent Events from Redis pub/sub.

Admission, in the seed's order: a precheck (the task's lock key is set: 409), a `SET NX PX`
token lock (taken: 409), an atomic `UPDATE ... WHERE status != 'running'` (no row: release the
lock, 409), then `run_agent.delay(...)` and 202.

    uvicorn bench.peers.celery_seed.app:app
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from bench.peers.celery_seed import db
from bench.peers.celery_seed.config import LOCK_TTL_MS, SeedConfig, channel, lock_key
from bench.peers.celery_seed.worker import RELEASE, run_agent

__all__ = ["app"]

CONFIG = SeedConfig.from_env()
REDIS = aioredis.Redis.from_url(CONFIG.redis_url)
ENDS = ("run.completed", "run.failed")


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def health(_: Request) -> Response:
    return PlainTextResponse("ok")


async def create_task(request: Request) -> Response:
    body: dict[str, Any] = await request.json()
    title, description = str(body.get("title", "")), str(body.get("description", ""))
    if not title:
        return _error(422, "title is required")
    task_id = await asyncio.to_thread(db.create_task, CONFIG.db_path, title, description)
    return JSONResponse({"id": task_id, "title": title, "status": "new"}, status_code=201)


async def list_tasks(request: Request) -> Response:
    limit = int(request.query_params.get("limit", "100"))
    tasks = await asyncio.to_thread(db.list_tasks, CONFIG.db_path, limit)
    return JSONResponse({"tasks": tasks})


async def run_agents(request: Request) -> Response:
    body: dict[str, Any] = await request.json()
    task_id, hold_seconds = int(body["id"]), float(body.get("hold_seconds", 0.0))
    key = lock_key(task_id)
    if await REDIS.exists(key):
        return _error(409, "a run of this task is in progress (lock precheck)")
    token = uuid.uuid4().hex
    if not await REDIS.set(key, token, nx=True, px=LOCK_TTL_MS):
        return _error(409, "a run of this task is in progress (lock)")
    outcome = await asyncio.to_thread(db.mark_running, CONFIG.db_path, task_id)
    if outcome != "ok":
        await REDIS.eval(RELEASE, 1, key, token)
        if outcome == "missing":
            return _error(404, f"task {task_id} does not exist")
        return _error(409, "a run of this task is in progress (database)")
    # Blocking, on the event loop, as the seed called it: one short publish to the broker.
    run_agent.delay(task_id, token, hold_seconds)
    return JSONResponse({"status": "queued", "task_id": task_id}, status_code=202)


async def task_events(request: Request) -> Response:
    task_id = int(request.path_params["task_id"])
    pubsub = REDIS.pubsub()
    await pubsub.subscribe(channel(task_id))  # before the answer starts: nothing is missed

    async def frames() -> AsyncIterator[str]:
        try:
            yield ": subscribed\n\n"
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                data = message["data"].decode()
                event = json.loads(data)["type"]
                yield f"event: {event}\ndata: {data}\n\n"
                if event in ENDS:
                    return
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()

    return StreamingResponse(frames(), media_type="text/event-stream")


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/api/tasks", create_task, methods=["POST"]),
        Route("/api/tasks", list_tasks, methods=["GET"]),
        Route("/run-agents", run_agents, methods=["POST"]),
        Route("/events/tasks/{task_id}", task_events),
    ]
)
