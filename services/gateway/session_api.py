"""`/api/session`: signing the browser in with an API token, for the web UI and EventSource.

POST exchanges a token's secret for the `ragpoc_session` cookie (HttpOnly, SameSite=Strict,
12 h, Secure over https), GET says who the request acts as, DELETE clears the cookie. The cookie
is stateless (`services.gateway.tokens`): nothing is stored, any gateway replica accepts it, and
signing out only forgets it in the browser. With authentication off every answer is
`anonymous` with write scope and `"auth": "off"`.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.gateway.auth import (
    SESSION_PATH,
    log_denied,
    principal_of,
    problem_of,
    unauthorized,
)
from services.gateway.bodies import decode_body
from services.gateway.tokens import SESSION_COOKIE, SESSION_LIFETIME_S, TokenSet, issue_session

__all__ = ["session_routes"]

MAX_BODY_BYTES = 4096
AUTH_OFF = {"name": "anonymous", "scope": "write", "auth": "off"}
COOKIE_ATTRIBUTES = "HttpOnly; SameSite=Strict; Path=/"


class SignIn(msgspec.Struct, frozen=True):
    token: str


def _cookie(value: str, max_age: int, secure: bool) -> str:
    cookie = f"{SESSION_COOKIE}={value}; {COOKIE_ATTRIBUTES}; Max-Age={max_age}"
    return f"{cookie}; Secure" if secure else cookie


def session_routes(tokens: TokenSet) -> list[Route]:
    async def sign_in(request: Request) -> Response:
        if not tokens:
            return JSONResponse(AUTH_OFF)
        body = await decode_body(request, SignIn, MAX_BODY_BYTES)
        token = tokens.match(body.token)
        if token is None:
            log_denied(request.scope, "wrong_token", 401)
            return unauthorized("that is not a valid API token")
        response = JSONResponse({"name": token.name, "scope": token.scope, "auth": "on"})
        secure = request.url.scheme == "https"
        response.headers["Set-Cookie"] = _cookie(issue_session(token), SESSION_LIFETIME_S, secure)
        return response

    async def who_am_i(request: Request) -> Response:
        if not tokens:
            return JSONResponse(AUTH_OFF)
        principal = principal_of(request)
        if principal is None:
            problem = problem_of(request)
            if problem != "no_credentials":  # a page asking whether it is signed in is no attack
                log_denied(request.scope, problem, 401)
            return unauthorized("not signed in: POST /api/session with an API token")
        return JSONResponse({"name": principal.name, "scope": principal.scope, "auth": "on"})

    async def sign_out(request: Request) -> Response:
        response = Response(status_code=204)
        response.headers["Set-Cookie"] = _cookie("", 0, request.url.scheme == "https")
        return response

    return [
        Route(SESSION_PATH, sign_in, methods=["POST"]),
        Route(SESSION_PATH, who_am_i, methods=["GET"]),
        Route(SESSION_PATH, sign_out, methods=["DELETE"]),
    ]
