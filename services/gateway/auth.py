"""Who is asking: every request to the gateway is authenticated here, before any route runs.

`AuthMiddleware` is plain ASGI (it never wraps the response, so SSE streams pass through
unbuffered). It reads `Authorization: Bearer <secret>` or, for the browser and EventSource
which cannot send headers, the `ragpoc_session` cookie (`services.gateway.tokens`), puts the
`Principal` in the request's state (`principal_of`), binds the token's name (never its secret)
to the request's log lines as `token_name`, and answers itself:

- 401 (`WWW-Authenticate: Bearer`) on a protected path without valid credentials;
- 403 to a read token on a write method (POST, PUT, PATCH, DELETE), the session endpoint aside.

Open without credentials: `/`, `/static/*` (the UI shell holds no data), `/health`, `/ready`,
`/openapi.json`, `/docs` and its files, `/api/session`, and `/metrics` unless
RAGPOC_METRICS_PUBLIC=0. Everything else needs a token. With no token configured,
authentication is off and every request acts as `anonymous` with write scope.

Each refusal is one `auth.denied` line: path, method, reason, client address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import structlog
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from libs.common import Settings
from services.gateway.errors import error_response
from services.gateway.tokens import SESSION_COOKIE, ApiToken, TokenSet, is_loopback

__all__ = [
    "ANONYMOUS",
    "OPEN_PATHS",
    "SESSION_PATH",
    "AuthMiddleware",
    "Principal",
    "announce",
    "log_denied",
    "principal_of",
    "token_name_of",
    "unauthorized",
]

log = structlog.get_logger(__name__)

SESSION_PATH = "/api/session"
OPEN_PATHS = frozenset({"/", "/health", "/ready", "/openapi.json", "/docs", SESSION_PATH})
OPEN_PREFIXES = ("/static/", "/docs/")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PRINCIPAL = "principal"
PROBLEM = "auth_problem"

# reason (as logged) -> what the client is told
MESSAGES = {
    "no_credentials": "this needs an API token: send `Authorization: Bearer <token>`, "
    "or sign in (POST /api/session)",
    "malformed_authorization": "the Authorization header must be `Bearer <token>`",
    "invalid_token": "the API token is not valid (unknown, or no longer configured)",
    "invalid_session": "the session has expired or is no longer valid: sign in again",
}


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token's name and scope, and how it proved it."""

    name: str
    scope: Literal["read", "write"]
    via: Literal["bearer", "session", "open"]

    @classmethod
    def of(cls, token: ApiToken, via: Literal["bearer", "session"]) -> Principal:
        return cls(token.name, token.scope, via)

    @property
    def can_write(self) -> bool:
        return self.scope == "write"


ANONYMOUS = Principal("anonymous", "write", "open")


def principal_of(request: Request) -> Principal | None:
    """The request's principal: ANONYMOUS when authentication is off, None when it offered no
    valid credentials (only possible on an open path)."""
    principal: Principal | None = request.scope.get("state", {}).get(PRINCIPAL)
    return principal


def token_name_of(scope: Scope) -> str | None:
    """The name of the token a request came with; None without one (authentication off)."""
    principal: Principal | None = scope.get("state", {}).get(PRINCIPAL)
    if principal is None or principal.via == "open":
        return None
    return principal.name


def problem_of(request: Request) -> str:
    """Why the request's credentials were refused ("" when it offered none, or valid ones)."""
    return str(request.scope.get("state", {}).get(PROBLEM, ""))


def unauthorized(message: str) -> JSONResponse:
    response = error_response(401, message)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def log_denied(scope: Scope, reason: str, status: int, **fields: object) -> None:
    client = scope.get("client")
    log.warning(
        "auth.denied",
        path=scope.get("path", ""),
        method=scope.get("method", ""),
        reason=reason,
        status=status,
        client=client[0] if client else "",
        **fields,
    )


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class AuthMiddleware:
    def __init__(self, app: ASGIApp, tokens: TokenSet, *, metrics_public: bool) -> None:
        self.app = app
        self.tokens = tokens
        self.open_paths = OPEN_PATHS | ({"/metrics"} if metrics_public else set())

    def is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(OPEN_PREFIXES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if not self.tokens:
            state[PRINCIPAL] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        principal, problem = self.authenticate(scope)
        state[PRINCIPAL], state[PROBLEM] = principal, problem
        path = _route_path(scope)
        if not self.is_open(path):
            if principal is None:
                log_denied(scope, problem, 401)
                await self.refuse(scope, receive, send, unauthorized(MESSAGES[problem]))
                return
            method = scope.get("method", "GET")
            if method in WRITE_METHODS and path != SESSION_PATH and not principal.can_write:
                log_denied(scope, "read_scope", 403, token_name=principal.name)
                message = (
                    f"token {principal.name!r} may only read: {method} {path} needs a token "
                    "with write scope"
                )
                await self.refuse(scope, receive, send, error_response(403, message))
                return
        if principal is None:
            await self.app(scope, receive, send)
            return
        with structlog.contextvars.bound_contextvars(token_name=principal.name):
            await self.app(scope, receive, send)

    def authenticate(self, scope: Scope) -> tuple[Principal | None, str]:
        """(the principal, "") or (None, why not); a Bearer header wins over the cookie."""
        authorization = ""
        cookies: list[str] = []
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"cookie":
                cookies.append(value.decode("latin-1"))
        if authorization:
            kind, _, secret = authorization.strip().partition(" ")
            if kind.lower() != "bearer" or not secret.strip():
                return None, "malformed_authorization"
            token = self.tokens.match(secret.strip())
            return (Principal.of(token, "bearer"), "") if token else (None, "invalid_token")
        session = cookie_parser("; ".join(cookies)).get(SESSION_COOKIE, "")
        if session:
            token = self.tokens.session_token(session)
            return (Principal.of(token, "session"), "") if token else (None, "invalid_session")
        return None, "no_credentials"

    @staticmethod
    async def refuse(scope: Scope, receive: Receive, send: Send, response: JSONResponse) -> None:
        if scope["type"] == "websocket":  # refused before the handshake: answered 403
            await send({"type": "websocket.close", "code": 1008})
            return
        await response(scope, receive, send)


def announce(settings: Settings, tokens: TokenSet) -> None:
    """Say once, at start, whether the API needs a token, and if not who can use it."""
    if tokens:
        log.info(
            "auth.on",
            tokens=[f"{token.name}:{token.scope}" for token in tokens],
            metrics_public=settings.metrics_public,
        )
    elif is_loopback(settings.host):
        log.warning(
            "auth.open",
            host=settings.host,
            message="no API token is set: anyone on this machine can use the API "
            "(set RAGPOC_API_TOKENS to require one)",
        )
    else:
        log.warning(
            "auth.open",
            host=settings.host,
            allow_open=True,
            message=f"RAGPOC_ALLOW_OPEN=1 and no API token: anyone who can reach "
            f"{settings.host}:{settings.gateway_port} can use the API",
        )
