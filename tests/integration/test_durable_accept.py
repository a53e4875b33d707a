"""Durable accept: POST /run-agents answers 202 only once Valkey has the command on disk
(WAITAOF 1 0 on the XADD's connection), finds out once whether the server can and logs why not,
and undoes an admission Valkey did not confirm, or that a stopping gateway cut short.

A Valkey of this module's own persists with AOF (`appendfsync always`); a test that needs a
command never to reach the disk switches it to `appendfsync no` (Valkey then never fsyncs by
itself, so WAITAOF waits out its timeout) and back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from libs.common import Settings
from libs.events import Keys, connect_redis
from services.gateway.context import DURABLE_TIMEOUT_MS, DurableAccept
from tests.conftest import free_port
from tests.eventually import eventually
from tests.integration.admission_support import (
    GatewayStack,
    aof_valkey,
    blocked_in,
    gateway_stack,
    serving_gateway,
)


@pytest.fixture(scope="module")
def aof_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with aof_valkey(tmp_path_factory.mktemp("aof-valkey")) as url:
        yield url


@pytest.fixture
async def stack(
    aof_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> AsyncIterator[GatewayStack]:
    async with gateway_stack(aof_url, database_url, keys, tmp_path) as running:
        yield running


@asynccontextmanager
async def fsync_never(redis: aioredis.Redis) -> AsyncIterator[None]:
    """`appendfsync no` while in the block: nothing written meanwhile is confirmed on disk."""
    await redis.config_set("appendfsync", "no")
    try:
        yield
    finally:
        await redis.config_set("appendfsync", "always")


async def probed(url: str, keys: Keys, **settings: object) -> tuple[bool, str, list[str]]:
    """What a gateway's DurableAccept finds on the server at `url` (asked twice), and what it
    logged."""
    redis = connect_redis(url)
    try:
        durable = DurableAccept(redis, Settings(**settings), keys)  # type: ignore[arg-type]
        with capture_logs() as logs:
            available = await durable.probe()
            assert await durable.probe() == available
    finally:
        await redis.aclose()
    said = [str(e.get("reason") or e.get("how")) for e in logs if e["event"].endswith("accept")]
    return available, durable.reason, said


async def test_durable_accept_is_found_on_a_valkey_with_aof(aof_url: str, keys: Keys) -> None:
    available, _, said = await probed(aof_url, keys)
    assert available
    assert len(said) == 1  # logged once


async def test_durable_accept_is_unavailable_without_waitaof_or_aof_and_says_why(
    redis_url: str, keys: Keys
) -> None:
    # the session's Valkey runs without AOF; the machine's Redis 7.0 has no WAITAOF
    available, reason, said = await probed(redis_url, keys)
    assert not available
    assert "WAITAOF" in reason
    assert "appendonly is disabled" in reason or "unknown command" in reason
    assert said == [reason]  # logged once, with the reason


async def test_durable_accept_is_unavailable_when_aof_never_fsyncs_or_it_is_off(
    aof_url: str, keys: Keys
) -> None:
    admin = connect_redis(aof_url)
    try:
        async with fsync_never(admin):
            available, reason, _ = await probed(aof_url, keys)
        assert not available
        assert "appendfsync no" in reason
    finally:
        await admin.aclose()
    available, reason, said = await probed(aof_url, keys, durable_accept=False)
    assert (available, said) == (False, [reason])
    assert "RAGPOC_DURABLE_ACCEPT" in reason


async def test_a_202_waits_until_the_command_is_on_disk(stack: GatewayStack) -> None:
    first, second = await stack.new_task(), await stack.new_task()
    accepted = await stack.client.post("/run-agents", json={"id": first})
    assert accepted.status_code == 202, accepted.text

    started = time.monotonic()
    async with fsync_never(stack.redis):
        refused = await stack.client.post("/run-agents", json={"id": second})
    assert refused.status_code == 503, refused.text
    assert time.monotonic() - started >= DURABLE_TIMEOUT_MS / 1000
    assert "did not confirm" in refused.json()["error"]["message"]
    claim = await stack.claim(second)
    assert claim is not None
    assert claim.state == "failed"
    assert await stack.lock_holder(second) is None
    # the command is in the stream, but a runner would skip it: its run has ended
    assert await stack.store.run_outcome(second, claim.run_id) == "run.failed"

    again = await stack.client.post("/run-agents", json={"id": second})
    assert again.status_code == 202, again.text


async def test_with_durable_accept_off_a_202_does_not_wait_for_the_disk(
    aof_url: str, database_url: str, keys: Keys, tmp_path: Path
) -> None:
    async with gateway_stack(aof_url, database_url, keys, tmp_path, durable_accept=False) as s:
        task_id = await s.new_task()
        async with fsync_never(s.redis):
            reply = await s.client.post("/run-agents", json={"id": task_id})
        assert reply.status_code == 202, reply.text
        assert reply.elapsed.total_seconds() < DURABLE_TIMEOUT_MS / 1000


async def test_a_gateway_stopped_mid_request_frees_the_task(stack: GatewayStack) -> None:
    warm, task_id = await stack.new_task(), await stack.new_task()
    settings = msgspec.structs.replace(stack.settings, gateway_port=free_port())
    async with (
        serving_gateway(settings, graceful_s=1) as server,
        httpx.AsyncClient(base_url=settings.gateway_url, timeout=10) as client,
    ):
        # its first request finds out that durable accept is available
        assert (await client.post("/run-agents", json={"id": warm})).status_code == 202
        async with fsync_never(stack.redis):
            request = asyncio.create_task(client.post("/run-agents", json={"id": task_id}))
            await eventually(
                lambda: blocked_in(stack.redis, "waitaof"),
                message="the request never waited for the fsync",
            )
            server.should_exit = True  # stops; cancels the request after 1 s
            await eventually(lambda: request.done(), message="the request outlived its gateway")
    try:
        answered: int | None = (await request).status_code
    except httpx.HTTPError:
        answered = None  # the connection was cut
    assert answered != 202, "a command that never reached the disk was accepted"

    async def undone() -> bool:
        claim = await stack.claim(task_id)
        locked = await stack.lock_holder(task_id)
        return claim is not None and claim.state == "failed" and locked is None

    await eventually(undone, message="the cut-short admission was not undone")
    # The undo outlived the gateway's lifespan, which had closed its Redis client: the undo
    # reconnected it. Close it again (app.py awaiting `finish_undos` first would spare this).
    await server.lifespan.state["ctx"].redis.aclose()
    again = await stack.client.post("/run-agents", json={"id": task_id})
    assert again.status_code == 202, again.text
