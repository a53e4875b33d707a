"""The gateway with API tokens: every protected route refuses a request without a valid one,
a read token cannot write, the browser's session cookie works (and ends when its token goes),
and no secret ever reaches a log line. (How tokens are read, and the start-up rule:
test_auth_startup.py.)"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
import structlog
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from structlog.testing import capture_logs

from libs.common import Settings
from services.gateway.app import STATIC
from services.gateway.app import create_app as gateway_app
from services.gateway.auth import AuthMiddleware
from services.gateway.tokens import (
    SESSION_LIFETIME_S,
    TokenSet,
    issue_session,
    load_tokens,
    parse_tokens,
)
from tests.conftest import free_port
from tests.integration.conftest import StartStack
from tests.integration.inprocess import InProcessStack, serving
from tests.integration.test_auth_startup import READ, TOKENS, WRITE
from tests.sse_client import sse_frames

# what the interface leaves open without credentials (/metrics: RAGPOC_METRICS_PUBLIC=1)
OPEN_PATHS = {"/", "/health", "/ready", "/openapi.json", "/docs", "/metrics", "/api/session"}
OPEN_MOUNTS = {"/static", "/docs"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def stack(gateway_stack: StartStack) -> AsyncIterator[InProcessStack]:
    """Who may ask depends neither on the Redis server nor on the SQL backend."""
    async with gateway_stack(api_tokens=TOKENS) as running:
        yield running


@asynccontextmanager
async def browser(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a cookie jar of its own, as a browser tab."""
    async with httpx.AsyncClient(base_url=settings.gateway_url, timeout=10) as client:
        yield client


@asynccontextmanager
async def another_gateway(settings: Settings, **changes: Any) -> AsyncIterator[Settings]:
    """One more gateway on the stack's Redis and database, with other settings (a replica, or
    the same gateway restarted with other tokens)."""
    replica = msgspec.structs.replace(settings, gateway_port=free_port(), **changes)
    async with serving(gateway_app(replica), replica.gateway_port):
        yield replica


def session_cookie(response: httpx.Response) -> str:
    match = re.match(r"ragpoc_session=([^;]*)", response.headers["set-cookie"])
    assert match, response.headers["set-cookie"]
    return match.group(1)


def as_cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"ragpoc_session={value}"}


def protected_requests(app: Starlette) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app has that needs credentials, path parameters
    filled in: a route added later is covered without changing this test."""
    for route in app.routes:
        if isinstance(route, Mount):
            if route.path not in OPEN_MOUNTS:
                yield "GET", f"{route.path}/anything"
        elif isinstance(route, Route) and route.path not in OPEN_PATHS:
            path = re.sub(r"\{[^}]*\}", "1", route.path)
            for method in sorted(route.methods or {"GET"}):
                yield method, path


def assert_refused(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.request.url, response.text)
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if response.request.method == "HEAD":
        return ""
    error = response.json()["error"]
    assert error["status"] == status
    message: str = error["message"]
    return message


async def test_every_protected_route_needs_credentials(stack: InProcessStack) -> None:
    requests = list(protected_requests(gateway_app(stack.settings)))
    assert {("POST", "/run-agents"), ("GET", "/events"), ("POST", "/api/tasks")} <= set(requests)
    for method, path in requests:
        refused = await stack.client.request(method, path)
        message = assert_refused(refused, 401)
        assert method == "HEAD" or "Authorization: Bearer" in message


async def test_the_ui_shell_health_and_readiness_need_no_token(stack: InProcessStack) -> None:
    some_file = next(p for p in STATIC.rglob("*") if p.is_file())
    for path in ("/health", "/ready", "/", f"/static/{some_file.relative_to(STATIC)}"):
        assert (await stack.client.get(path)).status_code == 200, path
    assert (await stack.client.get("/metrics")).status_code == 200  # public by default
    assert_refused(await stack.client.get("/api/session"), 401)  # open, but not signed in


async def test_a_read_token_reads_and_may_not_write(stack: InProcessStack) -> None:
    created = await stack.client.post("/api/tasks", json={"title": "t"}, headers=bearer(WRITE))
    task_id = created.json()["id"]
    read = bearer(READ)
    assert (await stack.client.get("/api/tasks", headers=read)).status_code == 200
    assert (await stack.client.get(f"/api/tasks/{task_id}", headers=read)).status_code == 200
    refused = await stack.client.post("/api/tasks", json={"title": "t"}, headers=read)
    assert "'ui' may only read" in assert_refused(refused, 403)
    refused = await stack.client.post("/run-agents", json={"id": task_id}, headers=read)
    assert_refused(refused, 403)
    assert [
        t["id"] for t in (await stack.client.get("/api/tasks", headers=read)).json()["tasks"]
    ] == [task_id]


async def test_a_write_token_reads_and_writes(stack: InProcessStack) -> None:
    write = bearer(WRITE)
    created = await stack.client.post("/api/tasks", json={"title": "t"}, headers=write)
    assert created.status_code == 201
    accepted = await stack.client.post(
        "/run-agents", json={"id": created.json()["id"]}, headers=write
    )
    assert accepted.status_code == 202
    assert (await stack.client.get("/api/tasks", headers=write)).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-configured-secret-123", f"Basic {READ}", "Bearer", f"Bearer {READ}x"],
)
async def test_a_wrong_token_is_refused(stack: InProcessStack, authorization: str) -> None:
    refused = await stack.client.get("/api/tasks", headers={"Authorization": authorization})
    assert_refused(refused, 401)


async def test_signing_in_sets_a_session_cookie_that_signing_out_clears(
    stack: InProcessStack,
) -> None:
    async with browser(stack.settings) as tab:
        assert_refused(await tab.post("/api/session", json={"token": "wrong-secret-1234567"}), 401)
        signed_in = await tab.post("/api/session", json={"token": READ})
        assert signed_in.status_code == 200
        assert signed_in.json() == {"name": "ui", "scope": "read", "auth": "on"}
        attributes = signed_in.headers["set-cookie"].split("; ")[1:]
        assert set(attributes) == {"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"}
        assert (await tab.get("/api/session")).json() == {
            "name": "ui",
            "scope": "read",
            "auth": "on",
        }
        assert (await tab.get("/api/tasks")).status_code == 200
        assert_refused(await tab.post("/api/tasks", json={"title": "t"}), 403)

        signed_out = await tab.delete("/api/session")
        assert signed_out.status_code == 204
        assert "Max-Age=0" in signed_out.headers["set-cookie"]
        assert session_cookie(signed_out) == ""
        assert_refused(await tab.get("/api/session"), 401)
        assert_refused(await tab.get("/api/tasks"), 401)


async def test_the_event_streams_accept_the_session_cookie(stack: InProcessStack) -> None:
    created = await stack.client.post("/api/tasks", json={"title": "t"}, headers=bearer(WRITE))
    task_id = created.json()["id"]
    async with browser(stack.settings) as tab:
        await tab.post("/api/session", json={"token": READ})
        [frame] = await sse_frames(tab, f"/events/tasks/{task_id}", count=1)
        assert frame["event"] == "task.created"
        [frame] = await sse_frames(
            tab, "/events?from=start", until=lambda f: f["event"] == "task.created"
        )
        assert frame["event"] == "task.created"
    assert_refused(await stack.client.get(f"/events/tasks/{task_id}"), 401)


async def test_an_expired_or_tampered_cookie_is_refused(stack: InProcessStack) -> None:
    [reader] = [token for token in load_tokens(stack.settings) if token.name == "ui"]
    expired = issue_session(reader, now=time.time() - SESSION_LIFETIME_S - 1)
    fresh = issue_session(reader)
    assert (await stack.client.get("/api/tasks", headers=as_cookie(fresh))).status_code == 200
    payload, mac = fresh.split(".")
    raised = base64.urlsafe_b64decode(payload + "==").replace(b"|read|", b"|write|")
    as_writer = base64.urlsafe_b64encode(raised).rstrip(b"=").decode() + "." + mac
    other_mac = payload + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    for cookie in (expired, as_writer, other_mac, "garbage", "a.b.c"):
        refused = await stack.client.get("/api/tasks", headers=as_cookie(cookie))
        assert "sign in again" in assert_refused(refused, 401)
        refused = await stack.client.post(
            "/api/tasks", json={"title": "t"}, headers=as_cookie(cookie)
        )
        assert_refused(refused, 401)


async def test_a_session_works_on_any_replica_until_its_token_is_rotated(
    stack: InProcessStack,
) -> None:
    async with browser(stack.settings) as tab:
        reader = session_cookie(await tab.post("/api/session", json={"token": READ}))
        writer = session_cookie(await tab.post("/api/session", json={"token": WRITE}))
    async with another_gateway(stack.settings) as replica, browser(replica) as tab:
        assert (await tab.get("/api/session", headers=as_cookie(reader))).json()["name"] == "ui"
    rotated = f"ui:read:{READ[::-1]},ops:write:{WRITE}"
    async with (
        another_gateway(stack.settings, api_tokens=rotated) as restarted,
        browser(restarted) as tab,
    ):
        assert_refused(await tab.get("/api/tasks", headers=as_cookie(reader)), 401)
        assert_refused(await tab.get("/api/tasks", headers=bearer(READ)), 401)
        assert (await tab.get("/api/tasks", headers=as_cookie(writer))).status_code == 200


async def test_metrics_need_a_read_token_unless_public(stack: InProcessStack) -> None:
    async with (
        another_gateway(stack.settings, metrics_public=False) as private,
        browser(private) as client,
    ):
        assert_refused(await client.get("/metrics"), 401)
        assert (await client.get("/metrics", headers=bearer(READ))).status_code == 200


async def test_no_secret_reaches_a_log_line(stack: InProcessStack) -> None:
    stranger = "someone-elses-secret-0000"
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with browser(stack.settings) as tab:
            cookie = session_cookie(await tab.post("/api/session", json={"token": READ}))
            await tab.post("/api/tasks", json={"title": "t"})
            await tab.post("/api/session", json={"token": stranger})
        await stack.client.get("/api/tasks", headers=bearer(stranger))
        await stack.client.get("/api/tasks", headers=bearer(READ))
        await stack.client.post("/api/tasks", json={"title": "t"}, headers=bearer(WRITE))
        await stack.client.get("/api/tasks", headers=as_cookie(cookie + "x"))
    denied = [entry for entry in logs if entry["event"] == "auth.denied"]
    assert [(d["reason"], d["status"]) for d in denied] == [
        ("read_scope", 403),
        ("wrong_token", 401),
        ("invalid_token", 401),
        ("invalid_session", 401),
    ]
    assert denied[0]["token_name"] == "ui"
    assert {d["client"] for d in denied} == {"127.0.0.1"}
    assert {d["path"] for d in denied} == {"/api/tasks", "/api/session"}
    for secret in (READ, WRITE, stranger, cookie):
        assert secret not in repr(logs)


async def test_a_request_logs_under_its_token_name() -> None:
    async def inner(_request: object) -> PlainTextResponse:
        structlog.get_logger("probe").info("probe.handled")
        return PlainTextResponse("ok")

    app = AuthMiddleware(
        Starlette(routes=[Route("/api/probe", inner)]),
        TokenSet(parse_tokens([("test", entry) for entry in TOKENS.split(",")])),
        metrics_public=True,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            assert (await client.get("/api/probe", headers=bearer(READ))).status_code == 200
    [handled] = [entry for entry in logs if entry["event"] == "probe.handled"]
    assert handled["token_name"] == "ui"
    assert READ not in repr(logs)
    assert "token_name" not in structlog.contextvars.get_contextvars()  # unbound after it
