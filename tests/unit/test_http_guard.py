"""The Host check (against DNS rebinding) and the security headers, on a small app."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from services.gateway.http_guard import (
    AllowedHosts,
    SecurityHeaders,
    default_allowed_hosts,
    host_of,
)


async def hello(_request: Request) -> Response:
    return PlainTextResponse("hello")


async def framed(_request: Request) -> Response:
    return PlainTextResponse("mine", headers={"x-frame-options": "SAMEORIGIN"})


def guarded(allowed: list[str]) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/", hello), Route("/health", hello), Route("/own", framed)])
    wrapped = SecurityHeaders(AllowedHosts(app, allowed))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=wrapped), base_url="http://127.0.0.1:8001"
    )


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:8001", "127.0.0.1"),
        ("[::1]:8001", "::1"),
        ("LocalHost.", "localhost"),
        ("::1", "::1"),
    ],
)
def test_host_of_strips_port_brackets_case_and_dot(header: str, host: str) -> None:
    assert host_of(header) == host


async def test_a_rebound_name_is_refused_with_a_json_400() -> None:
    async with guarded(default_allowed_hosts("127.0.0.1")) as client:
        reply = await client.get("/", headers={"host": "evil.example:8001"})
    assert reply.status_code == 400
    assert "RAGPOC_ALLOWED_HOSTS" in reply.json()["error"]["message"]


@pytest.mark.parametrize("host", ["127.0.0.1:8001", "localhost:8001", "[::1]:8001"])
async def test_loopback_names_reach_a_loopback_gateway(host: str) -> None:
    async with guarded(default_allowed_hosts("127.0.0.1")) as client:
        reply = await client.get("/", headers={"host": host})
    assert reply.status_code == 200, reply.text


async def test_probes_reach_health_whatever_the_host() -> None:
    async with guarded(["ragpoc.example.com"]) as client:
        assert (await client.get("/health", headers={"host": "10.1.2.3:8001"})).status_code == 200
        assert (await client.get("/", headers={"host": "10.1.2.3:8001"})).status_code == 400


async def test_a_wildcard_allows_subdomains_only() -> None:
    async with guarded(["*.example.com"]) as client:
        assert (await client.get("/", headers={"host": "ui.example.com"})).status_code == 200
        assert (await client.get("/", headers={"host": "example.com.evil"})).status_code == 400


def test_off_loopback_any_name_is_allowed_by_default() -> None:
    assert default_allowed_hosts("0.0.0.0") == ["*"]


async def test_every_response_carries_the_security_headers() -> None:
    async with guarded(["*"]) as client:
        reply = await client.get("/")
        refused = await guarded(["x"]).get("/", headers={"host": "y"})
    for answer in (reply, refused):
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-content-type-options"] == "nosniff"


async def test_a_header_the_app_sets_itself_wins() -> None:
    async with guarded(["*"]) as client:
        reply = await client.get("/own")
    assert reply.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
