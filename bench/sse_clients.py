"""Lean SSE clients for `bench/bench_sse.py`: one process holding thousands of connections at a
low, measured CPU cost, so the figures are about the server and not the client.

Each connection is a bare asyncio Protocol (no HTTP library): it sends one GET, splits what
arrives into frames at blank lines and keeps, for each `llm.delta` frame, its arrival time and
its bytes; JSON is parsed only after the run. Clients connect in batches (each batch waits until
its clients are subscribed) so thousands of connects do not hit the server's listen backlog at
once. It prints `ready` when every client has seen the ready marker, then writes to `--out` one
JSON object: per-client event counts, latencies (s) and this process's CPU seconds for the
connect phase and the event phase.

    python -m bench.sse_clients --port P --path /events/tasks/7 --clients 5000 --events 20 \
        --out outcome.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import cast

__all__ = ["SseCounter", "Tally", "main"]


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Tally:
    """How many clients are still waiting for events; `all_done` is set when none is."""

    def __init__(self) -> None:
        self.waiting = 0
        self.all_done = asyncio.Event()

    def finished_one(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.all_done.set()


class SseCounter(asyncio.Protocol):
    """One SSE connection: ready when `marker` arrives, done after `expected` delta frames."""

    def __init__(self, request: bytes, marker: bytes, expected: int, tally: Tally) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.marker = marker
        self.expected = expected
        self.ready: asyncio.Future[None] = loop.create_future()
        self.tally = tally
        tally.waiting += 1
        self.finished = False
        self.buffer = b""
        self.arrivals: list[tuple[float, bytes]] = []

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.tally.finished_one()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(self.request)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self.buffer + data
        if b"\n\n" not in buffer:
            self.buffer = buffer
            return
        *frames, self.buffer = buffer.split(b"\n\n")
        for frame in frames:
            if b"event: llm.delta" in frame:
                self.arrivals.append((now, frame))
            elif self.marker in frame and not self.ready.done():
                self.ready.set_result(None)
        if len(self.arrivals) >= self.expected:
            self.finish()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))
        self.finish()

    def result(self) -> tuple[int, int, list[float]]:
        """(frames received, distinct event indexes, latencies in s)."""
        latencies, indexes = [], set()
        for arrived, frame in self.arrivals:
            event = json.loads(frame[frame.index(b"data: ") + 6 :])
            latencies.append(arrived - event["at"])
            indexes.add(event["index"])
        return len(self.arrivals), len(indexes), latencies


async def connect(counter: SseCounter, port: int) -> asyncio.BaseTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(lambda: counter, "127.0.0.1", port)
    return transport


async def run(args: argparse.Namespace) -> dict[str, object]:
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    tally = Tally()
    clients: list[SseCounter] = []
    transports: list[asyncio.BaseTransport] = []
    cpu_start, started = cpu_seconds(), time.perf_counter()
    for first in range(0, args.clients, args.batch):
        batch = [
            SseCounter(request, args.marker.encode(), args.events, tally)
            for _ in range(min(args.batch, args.clients - first))
        ]
        transports += await asyncio.gather(*(connect(c, args.port) for c in batch))
        await asyncio.wait_for(asyncio.gather(*(c.ready for c in batch)), args.timeout)
        clients += batch
    connect_s, cpu_connected = time.perf_counter() - started, cpu_seconds()
    print("ready", flush=True)
    with contextlib.suppress(TimeoutError):  # a client short of events by then lost some
        await asyncio.wait_for(tally.all_done.wait(), args.timeout)
    cpu_events = cpu_seconds() - cpu_connected
    for transport in transports:
        transport.close()
    results = [c.result() for c in clients]
    return {
        "counts": [r[0] for r in results],
        "distinct": [r[1] for r in results],
        "latencies": [latency for r in results for latency in r[2]],
        "connect_s": connect_s,
        "cpu_connect_s": cpu_connected - cpu_start,
        "cpu_events_s": cpu_events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--marker", default="event: task.created")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--out", required=True, help="file to write the JSON outcome to")
    args = parser.parse_args()
    try:
        import uvloop

        outcome = uvloop.run(run(args))
    except ImportError:
        outcome = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(outcome))


if __name__ == "__main__":
    main()
