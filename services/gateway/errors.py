"""Errors that reach an HTTP client: a status, a message that says what to do, JSON always.

The one place where exceptions become HTTP answers: `ApiError` carries its own status, the
libraries' errors that a client can cause are mapped by `ERROR_STATUS`, Starlette's
`HTTPException` keeps its status, a value the database refuses is a 422, a Redis or database
outage (a restart, a failover, a dropped connection) is a 503 that says to retry, and anything
else is a 500 that is logged.
"""

from __future__ import annotations

from typing import Any

import structlog
from redis.exceptions import RedisError
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from libs.commandside.errors import InvalidIdempotencyKey, UnsettledIdempotencyKey
from libs.common.backoff import is_transient
from libs.common.errors import RagpocError

__all__ = ["ERROR_STATUS", "EXCEPTION_HANDLERS", "ApiError", "error_response"]

log = structlog.get_logger(__name__)


class ApiError(RagpocError):
    """An answer to the client: its HTTP status, a message that says what to do, details."""

    def __init__(self, status: int, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def error_response(status: int, message: str, **detail: Any) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message, **detail}}, status)


# Library errors a client's request can cause -> the status they are answered with.
ERROR_STATUS: dict[type[RagpocError], int] = {
    InvalidIdempotencyKey: 422,
    UnsettledIdempotencyKey: 503,
}


async def ragpoc_error_handler(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message, **exc.detail)
    status = next((code for kind, code in ERROR_STATUS.items() if isinstance(exc, kind)), None)
    if status is None:
        return await unexpected_error_handler(request, exc)
    return error_response(status, str(exc))


async def http_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


RETRY_AFTER_S = 1


async def dependency_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A transient Redis error or any database error: the request did nothing that lasts (an
    admission undoes itself), so the client may simply send it again."""
    if isinstance(exc, RedisError) and not is_transient(exc):
        return await unexpected_error_handler(request, exc)
    dependency = "redis" if isinstance(exc, RedisError) else "database"
    log.warning("http.dependency_unavailable", path=request.url.path, dependency=dependency)
    response = error_response(
        503,
        f"the {dependency} is unavailable for the moment ({type(exc).__name__}); "
        "nothing was changed, retry shortly",
        dependency=dependency,
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def data_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The database refused a value of the request (a number out of its column's range, a NUL
    in text): the request's fault, which a retry cannot mend; not an outage. The gateway's own
    checks should have refused it first, so it is logged."""
    assert isinstance(exc, DataError)
    if exc.connection_invalidated:
        return await dependency_error_handler(request, exc)
    log.warning("http.value_refused_by_database", path=request.url.path, error=str(exc.orig))
    return error_response(
        422,
        "the database refused a value of this request (a number out of range or text it "
        "cannot store); nothing was changed: correct the request",
    )


async def client_gone_handler(request: Request, _exc: Exception) -> JSONResponse:
    """The client hung up while its body was being read: nothing was done, and nobody reads
    the answer; not an error of the gateway's."""
    log.info("http.client_disconnected", path=request.url.path)
    return error_response(400, "the client closed the connection before sending its whole body")


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("http.unexpected_error", path=request.url.path, exc_info=exc)
    return error_response(500, "internal error: see the gateway log", type=type(exc).__name__)


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    RagpocError: ragpoc_error_handler,
    HTTPException: http_error_handler,
    ClientDisconnect: client_gone_handler,
    RedisError: dependency_error_handler,
    DBAPIError: dependency_error_handler,
    DataError: data_error_handler,
    Exception: unexpected_error_handler,
}
