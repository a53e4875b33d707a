"""Errors that reach an HTTP client: a status, a message that says what to do, JSON always."""

from __future__ import annotations

from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["ApiError", "api_error_handler", "http_error_handler", "unexpected_error_handler"]

log = structlog.get_logger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def error_response(status: int, message: str, **detail: Any) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message, **detail}}, status)


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, **exc.detail)


async def http_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("http.unexpected_error", path=request.url.path, exc_info=exc)
    return error_response(500, "internal error: see the gateway log", type=type(exc).__name__)
