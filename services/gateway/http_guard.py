"""Two guards every response passes: the Host header must name this gateway, and the browser is
told what the UI may load.

- **Allowed hosts** (against DNS rebinding: a page on evil.example whose name is made to
  resolve to 127.0.0.1 would otherwise reach a gateway on loopback with the browser's own
  credentials). A request whose `Host` is not allowed gets a 400 JSON error. `/health` and
  `/ready` are exempt: probes address a pod by its IP, and they reveal nothing.
- **Security headers** on every response: a Content-Security-Policy that allows only this
  origin's scripts and styles (no inline script, so an injected `<script>` does not run),
  forbids framing (clickjacking), and `X-Content-Type-Options: nosniff`.

Both are pure ASGI, so Server-Sent Events stream through unbuffered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.tokens import is_loopback

__all__ = [
    "LOOPBACK_HOSTS",
    "SECURITY_HEADERS",
    "AllowedHosts",
    "SecurityHeaders",
    "default_allowed_hosts",
    "host_of",
]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
EXEMPT_PATHS = frozenset({"/health", "/ready"})
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def default_allowed_hosts(bind_host: str) -> list[str]:
    """With no RAGPOC_ALLOWED_HOSTS: a gateway bound to loopback answers only to loopback
    names (that is the case DNS rebinding attacks); one bound to the network answers to any
    name, since it is reached by names it cannot know (a service name, a pod IP, a load
    balancer), and there tokens guard it."""
    if is_loopback(bind_host):
        return [*LOOPBACK_HOSTS, bind_host]
    return ["*"]


def host_of(header: str) -> str:
    """The host name of a Host header, without port, brackets or trailing dot, lower case."""
    value = header.strip().lower()
    if value.startswith("["):  # [::1]:8001
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


class AllowedHosts:
    """400 for a request whose Host header names none of `allowed` (`*` allows all,
    `*.example.com` any subdomain)."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = [host_of(name) if name != "*" else "*" for name in allowed if name]
        self.allow_any = "*" in self.allowed

    def allows(self, header: str) -> bool:
        if self.allow_any:
            return True
        host = host_of(header)
        for name in self.allowed:
            if host == name or (name.startswith("*.") and host.endswith(name[1:])):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allow_any or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        header = headers.get(b"host", b"").decode("latin-1")
        if self.allows(header):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "error": {
                    "status": 400,
                    "message": f"host {header!r} is not one this gateway answers to: "
                    "add it to RAGPOC_ALLOWED_HOSTS",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response (a header the app set itself wins)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
