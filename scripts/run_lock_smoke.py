#!/usr/bin/env python3
"""Smoke test of duplicate protection against a running gateway.

Creates a task (unless --task-id is given), sends two near-concurrent POST /run-agents for it,
and exits 0 only when exactly one was accepted (202), the other refused (409), and the task's
lock history gained exactly one `lock.acquired` and one `lock.conflict`. Prints what it saw.

    python scripts/run_lock_smoke.py --base-url http://127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter

import httpx


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run_lock_smoke.py",
        description="Two concurrent runs of one task: exactly one must be accepted.",
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8001", help="the gateway")
    parser.add_argument("--task-id", type=int, help="an existing task (default: create one)")
    return parser.parse_args(argv)


async def lock_history(client: httpx.AsyncClient, task_id: int) -> Counter[str]:
    reply = await client.get(f"/api/tasks/{task_id}/locks", params={"limit": 5000})
    reply.raise_for_status()
    return Counter(item["type"] for item in reply.json()["locks"])


async def smoke(base_url: str, task_id: int | None) -> bool:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        if task_id is None:
            created = await client.post(
                "/api/tasks", json={"title": "lock smoke", "description": "Why is the sky blue?"}
            )
            created.raise_for_status()
            task_id = int(created.json()["id"])
            print(f"created task {task_id}")
        before = await lock_history(client, task_id)
        replies = await asyncio.gather(
            *(client.post("/run-agents", json={"id": task_id}) for _ in range(2))
        )
        for reply in replies:
            print(f"POST /run-agents -> {reply.status_code} {reply.text}")
        after = await lock_history(client, task_id)
    gained = after - before
    print(f"lock history gained: {dict(gained)}")
    statuses = sorted(reply.status_code for reply in replies)
    # (the accepted run may already have finished and added its lock.released)
    ok = statuses == [202, 409] and (gained["lock.acquired"], gained["lock.conflict"]) == (1, 1)
    print("OK: one run accepted, one refused" if ok else "FAILED: expected one 202 and one 409")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return 0 if asyncio.run(smoke(args.base_url, args.task_id)) else 1
    except httpx.HTTPError as exc:
        print(f"FAILED: cannot talk to the gateway at {args.base_url}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
