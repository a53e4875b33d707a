"""The clients of a fault run: they create tasks, ask for runs (concurrent duplicates, retries
under one Idempotency-Key, across both gateways), follow tasks over SSE with Last-Event-ID
across reconnects, and ingest documents, recording everything they saw in a `History`."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass

import httpx

from tests.eventually import eventually
from tests.faults.history import Follow, History, Ingest, Request, RunTry

__all__ = ["Workload"]

ANSWER_PATIENCE_S = 90.0  # how long a client keeps retrying one request before it gives up
STILL_ADMITTING = "still being admitted"


@dataclass
class Workload:
    gateways: list[str]
    history: History
    rng: random.Random
    tasks: list[int]

    @classmethod
    async def start(
        cls, gateways: list[str], history: History, rng: random.Random, tasks: int
    ) -> Workload:
        """Create `tasks` tasks (before any fault) and wait until each can be run."""
        ids = []
        async with httpx.AsyncClient(base_url=gateways[0], timeout=10) as client:
            for n in range(tasks):
                reply = await client.post(
                    "/api/tasks", json={"title": f"Why is the sky blue? #{n}"}
                )
                reply.raise_for_status()
                ids.append(int(reply.json()["id"]))
            for task_id in ids:
                await eventually(
                    lambda t=task_id: client.get(f"/api/tasks/{t}"),
                    until=lambda reply: reply.status_code == 200,
                    message="a task of the workload was never projected",
                )
        return cls(gateways, history, rng, ids)

    async def run(self, stop: asyncio.Event, *, submitters: int = 4, followers: int = 3) -> None:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client,
            asyncio.TaskGroup() as tg,
        ):
            for _ in range(submitters):
                tg.create_task(self._submitter(client, stop))
            for _ in range(followers):
                tg.create_task(self._follower(stop))
            tg.create_task(self._ingester(client, stop))

    async def _submitter(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            task_id = self.rng.choice(self.tasks)
            duplicates = 2 if self.rng.random() < 0.3 else 1
            requests = [Request(task_id, uuid.uuid4().hex) for _ in range(duplicates)]
            self.history.requests.extend(requests)
            await asyncio.gather(*(self._settle(client, r, i) for i, r in enumerate(requests)))
            first = requests[0]
            if first.accepted and self.rng.random() < 0.2:
                await self._settle(client, first, 1)  # a client that retries after a success
            await asyncio.sleep(self.rng.uniform(0.1, 0.8))

    async def _settle(self, client: httpx.AsyncClient, request: Request, start: int) -> None:
        """POST until an answer that settles it (2xx, or a 4xx other than "still being
        admitted"), rotating gateways, for up to ANSWER_PATIENCE_S."""
        deadline = time.monotonic() + ANSWER_PATIENCE_S
        attempt = start
        while time.monotonic() < deadline:
            gateway = self.gateways[attempt % len(self.gateways)]
            attempt += 1
            at = time.time()
            try:
                reply = await client.post(
                    f"{gateway}/run-agents",
                    json={"id": request.task_id},
                    headers={"Idempotency-Key": request.key},
                )
            except httpx.HTTPError as exc:
                request.tries.append(
                    RunTry(request.task_id, request.key, at, None, error=repr(exc))
                )
            else:
                body = _json(reply)
                run_id = str(body.get("run_id", "")) if reply.status_code in (200, 202) else ""
                error = "" if run_id else _message(body, reply.text)
                request.tries.append(
                    RunTry(request.task_id, request.key, at, reply.status_code, run_id, error)
                )
                if reply.status_code < 500 and STILL_ADMITTING not in error:
                    return
            await asyncio.sleep(self.rng.uniform(0.2, 1.0))

    async def _follower(self, stop: asyncio.Event) -> None:
        timeout = httpx.Timeout(5.0, read=4.0)  # heartbeats come every second: silence is a fault
        async with httpx.AsyncClient(timeout=timeout) as client:
            while not stop.is_set():
                follow = Follow(self.rng.choice(self.tasks))
                self.history.follows.append(follow)
                until = time.monotonic() + self.rng.uniform(3, 12)
                while time.monotonic() < until and not stop.is_set():
                    gateway = self.rng.choice(self.gateways)
                    follow.connects += 1
                    try:
                        async with asyncio.timeout(max(until - time.monotonic(), 0.1)):
                            await _follow_once(
                                client, f"{gateway}/events/tasks/{follow.task_id}", follow
                            )
                    except (TimeoutError, httpx.HTTPError):
                        pass
                    await asyncio.sleep(0.1)

    async def _ingester(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            text = f"Fault run note {uuid.uuid4().hex}: Rayleigh scattering makes the sky blue."
            try:
                reply = await client.post(
                    f"{self.rng.choice(self.gateways)}/api/ingest",
                    json={"text": text, "title": f"note {n}"},
                )
            except httpx.HTTPError:
                pass
            else:
                if reply.status_code == 202:
                    body = reply.json()
                    self.history.ingests.append(
                        Ingest(body["batch_id"], tuple(body["document_ids"]))
                    )
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))


async def _follow_once(client: httpx.AsyncClient, url: str, follow: Follow) -> None:
    """Read frames, resuming after the last id seen, until the connection ends."""
    headers = {"Last-Event-ID": follow.ids[-1]} if follow.ids else {}
    frame: dict[str, str] = {}
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            return
        async for line in response.aiter_lines():
            if line:
                name, _, value = line.partition(": ")
                frame[name] = value
                continue
            if "event" in frame and "id" in frame:
                follow.ids.append(frame["id"])
            frame = {}


def _message(body: dict[str, object], text: str) -> str:
    error = body.get("error")
    return str(error.get("message", "")) if isinstance(error, dict) else text[:200]


def _json(reply: httpx.Response) -> dict[str, object]:
    try:
        body = reply.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
