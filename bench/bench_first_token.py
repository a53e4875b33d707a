"""POST /run-agents to the first token at an SSE client, one run at a time, against the model's
own time to first token measured directly in the same run (the baseline).

Starts `ragpoc up` with mockai's `hosted-small` latency profile (400 ms to the first token,
80 tokens/s, 30 ms per embedding). For each of `--runs` tasks it opens the task's SSE stream,
waits until it is live, POSTs the run and notes when each event type first arrives at the
client. The baseline is a streamed chat completion sent straight to mockai (same question,
same profile) timed to its first content chunk: what any client of that model waits, whatever
the platform. The difference is what rag-poc adds: admission, the runner picking the command
up, retrieval (one embedding at the profile's 30 ms, a vector search) and the event's way from
the runner through Valkey and the gateway to the browser.

    .venv/bin/python -m bench.bench_first_token [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from openai import AsyncOpenAI

from tests.conftest import free_port
from tests.stackproc import ragpoc_up

MILESTONES = ("202", "run.started", "retrieval.done", "llm.delta", "run.completed")
QUESTION = "Why is the sky blue?"


async def event_types(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    async for line in lines:
        if line.startswith("event: "):
            yield line.removeprefix("event: ")


async def one_run(api: httpx.AsyncClient) -> dict[str, float]:
    """Seconds from the POST to each milestone, seen by a client following the task."""
    task_id = (await api.post("/api/tasks", json={"title": QUESTION})).json()["id"]
    seen: dict[str, float] = {}
    async with api.stream("GET", f"/events/tasks/{task_id}") as stream:
        types = event_types(stream.aiter_lines())
        async for kind in types:  # the stream is live once it replayed the task's creation
            if kind == "task.created":
                break
        started = time.perf_counter()
        reply = await api.post("/run-agents", json={"id": task_id})
        if reply.status_code != 202:
            raise RuntimeError(f"run refused: {reply.status_code} {reply.text}")
        seen["202"] = time.perf_counter() - started
        async for kind in types:
            seen.setdefault(kind, time.perf_counter() - started)
            if kind in ("run.completed", "run.failed"):
                break
    if "run.completed" not in seen:
        raise RuntimeError(f"task {task_id}'s run did not complete: {sorted(seen)}")
    return seen


async def model_first_token(base_url: str) -> float:
    """Seconds to the first content chunk of a streamed completion, straight from mockai."""
    llm = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    started = time.perf_counter()
    stream = await llm.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    first = 0.0
    async for chunk in stream:
        if not first and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    await llm.close()
    return first


async def measure(base_url: str, mockai_url: str, runs: int) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as api:
        await one_run(api)  # warm-up: connections, scripts, pools
        await model_first_token(mockai_url)
        platform, model = [], []
        for _ in range(runs):  # interleaved, so noise hits both alike
            platform.append(await one_run(api))
            model.append(await model_first_token(mockai_url))
    base = statistics.median(model) * 1000
    print(f"{runs} runs, one at a time, mockai hosted-small; medians (ms) from the POST")
    print(f"{'milestone at the SSE client':<34}{'median':>9}{'p90':>9}")
    for name in MILESTONES:
        values = sorted(seen[name] * 1000 for seen in platform)
        p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
        print(f"{name:<34}{statistics.median(values):>9.1f}{p90:>9.1f}")
    first = statistics.median(seen["llm.delta"] for seen in platform) * 1000
    print(f"{'baseline: mockai first token':<34}{base:>9.1f}")
    print(f"first token: {first:.1f} ms = the model's {base:.1f} ms + {first - base:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    mockai_port = free_port()
    env = {"MOCKAI_PROFILE": "hosted-small", "MOCKAI_PORT": str(mockai_port)}
    with tempfile.TemporaryDirectory() as tmp, ragpoc_up(Path(tmp) / "data", env) as up:
        asyncio.run(measure(up.base_url, f"http://127.0.0.1:{mockai_port}/v1", args.runs))


if __name__ == "__main__":
    main()
