"""The API contract: an OpenAPI 3.1 document (`GET /openapi.json`) and a page showing it
(`GET /docs`: static/docs/, no CDN). Its schemas are generated from the request Structs and
`api_types` (`schema_components`), so they cannot drift from the code. It lists the operations
of the app serving it (a route missing from OPERATIONS is left out: the contract test catches
that), built once per set of routes."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from services.gateway.api_types import REF, SSE_EVENT, schema_components
from services.gateway.ingest_api import MAX_WAIT_S
from services.gateway.run_wait import MAX_WAIT_SECONDS
from services.gateway.tasks_api import TASK_STATUSES
from services.gateway.validation import MAX_ID

__all__ = ["OPENAPI_ROUTES", "OPERATIONS", "build_document", "docs_page", "openapi_json"]

DOCS_PAGE = Path(__file__).parent / "static" / "docs" / "index.html"
PROTECTED: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"sessionCookie": []}]
SECURITY = {"open": [], "probe": [], "optional": [{}, *PROTECTED], "read": PROTECTED}
SECURITY["write"] = PROTECTED
ENTRY_ID_PATTERN = "^[0-9]+-[0-9]+$"

Json = dict[str, Any]


def ref(name: str) -> Json:
    return {"$ref": REF.format(name=name)}


def json_body(schema: Json, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS: dict[int, str] = {
    400: "Malformed: a Host this gateway does not answer to, a bad Content-Length or Last-Event-ID",
    401: "No valid credentials: send `Authorization: Bearer <token>` or the session cookie",
    403: "The token's scope is `read`: this operation needs a `write` token",
    404: "The task does not exist",
    409: "The task is already being run (the body names the run holding it)",
    413: "The request body is larger than RAGPOC_MAX_BODY_BYTES",
    415: "The body is not `application/json`",
    422: "The request does not validate (the message says which part)",
    429: "Too many runs for this token this minute: retry after `Retry-After` seconds",
    502: "The ingestor answered with an error",
    503: "Redis, the database or the ingestor is unavailable for the moment: retry",
}
RETRY_AFTER = {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}


def error(status: int) -> Json:
    response = json_body(ref("ErrorBody"), ERRORS[status])
    if status in (429, 503):
        response["headers"] = {"Retry-After": RETRY_AFTER}
    return response


def text(media_type: str, description: str) -> Json:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def param(name: str, where: str, schema: Json, description: str) -> Json:
    about = {"description": description, "schema": schema}
    return {"name": name, "in": where, "required": where == "path", **about}


TASK_ID = param(
    "task_id", "path", {"type": "integer", "minimum": 1, "maximum": MAX_ID}, "The task's id"
)
LAST_EVENT_ID = "Resume after this event id (what the last frame's `id:` said)"


def limit(default: int, maximum: int) -> Json:
    schema = {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}
    return param("limit", "query", schema, f"How many items at most (1 to {maximum})")


def wait(maximum: float, what: str) -> Json:
    schema = {"type": "number", "exclusiveMinimum": 0, "maximum": maximum}
    return param("wait", "query", schema, f"Wait up to this many seconds for {what}")


SSE = {
    "description": "Server-Sent Events: the replay, then the live feed (`: heartbeat` comments "
    "while idle); the stream does not end by itself",
    "content": {"text/event-stream": {"schema": SSE_EVENT}},
}


def op(
    summary: str,
    tag: str,
    responses: dict[int, Json],
    errors: tuple[int, ...] = (),
    *,
    access: str = "read",
    parameters: tuple[Json, ...] = (),
    body: Json | None = None,
    description: str = "",
) -> Json:
    """One operation. `access`: "open" (no credentials; "probe": nor the Host check, as a probe
    addresses a pod by IP), "optional" (credentials when so configured), "read" or "write"."""
    codes = set(errors) | ({400} if access != "probe" else set())
    if access in ("read", "write", "optional"):
        codes.add(401)
    if access == "write":
        codes.add(403)
    if body is not None:
        codes |= {413, 415, 422}
    operation: Json = {"summary": summary, "tags": [tag]}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = {"required": True, **json_body(body, "A JSON body")}
    answers = {str(status): response for status, response in sorted(responses.items())}
    operation["responses"] = answers | {str(status): error(status) for status in sorted(codes)}
    operation["security"] = SECURITY[access]
    return operation


HTML = text("text/html", "An HTML page")
RUN = json_body(ref("RunAnswer"), "The run ended within `wait`: its outcome")
INGEST = json_body(ref("IngestAnswer"), "Queued (or still indexing after `wait`)")
SESSION = json_body(ref("Session"), "Who the session is")

OPERATIONS: dict[tuple[str, str], Json] = {
    ("/", "get"): op("The web UI", "ui", {200: HTML}, access="open"),
    ("/docs", "get"): op("This API's documentation, as a page", "meta", {200: HTML}, access="open"),
    ("/openapi.json", "get"): op(
        "This document",
        "meta",
        {200: json_body({"type": "object"}, "The OpenAPI 3.1 document")},
        access="open",
    ),
    ("/health", "get"): op(
        "Liveness: the process answers",
        "health",
        {200: json_body(ref("Health"), "The process answers")},
        access="probe",
    ),
    ("/ready", "get"): op(
        "Readiness: Redis, the database and the event hub work now",
        "health",
        {
            200: json_body(ref("Readiness"), "Every part is ok"),
            503: json_body(ref("Readiness"), "Some parts are not ok: `degraded` names them"),
        },
        access="probe",
    ),
    ("/metrics", "get"): op(
        "Prometheus metrics (public unless RAGPOC_METRICS_PUBLIC=0)",
        "health",
        {200: text("text/plain", "Prometheus text exposition format")},
        access="optional",
    ),
    ("/api/tasks", "get"): op(
        "List tasks, newest first",
        "tasks",
        {200: json_body(ref("TaskList"), "The tasks")},
        (422, 503),
        parameters=(
            param(
                "status", "query", {"enum": ["", *TASK_STATUSES]}, "Only this state (empty: any)"
            ),
            limit(100, 1000),
        ),
    ),
    ("/api/tasks", "post"): op(
        "Create a task",
        "tasks",
        {201: json_body(ref("Task"), "The new task")},
        (503,),
        access="write",
        body=ref("CreateTask"),
    ),
    ("/api/tasks/{task_id}", "get"): op(
        "Read a task and its runs",
        "tasks",
        {200: json_body(ref("TaskDetail"), "The task, with `run_history`")},
        (404, 422, 503),
        parameters=(TASK_ID,),
    ),
    ("/api/tasks/{task_id}/activity", "get"): op(
        "The task's Activity timeline, oldest first",
        "tasks",
        {200: json_body(ref("ActivityList"), "The items, each with the task right after it")},
        (404, 422, 503),
        parameters=(
            TASK_ID,
            param(
                "after",
                "query",
                {"type": "string", "pattern": ENTRY_ID_PATTERN, "default": "0-0"},
                "Only the items after this task-stream entry id",
            ),
        ),
    ),
    ("/api/tasks/{task_id}/locks", "get"): op(
        "The task's lock and conflict history, newest first",
        "tasks",
        {200: json_body(ref("LockHistory"), "The lock events")},
        (404, 422, 503),
        parameters=(TASK_ID, limit(200, 5000)),
    ),
    ("/run-agents", "post"): op(
        "Run the agents on a task (one run per task at a time)",
        "runs",
        {202: json_body(ref("RunAnswer"), "Queued (or still running after `wait`)"), 200: RUN},
        (404, 409, 429, 503),
        access="write",
        body=ref("RunRequest"),
        parameters=(
            wait(MAX_WAIT_SECONDS, "the run's outcome"),
            param(
                "Idempotency-Key",
                "header",
                {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
                "A retry with the same key is answered with the run the first request started",
            ),
        ),
        description="`hold_seconds` is accepted only when the server runs with RAGPOC_DEV=1.",
    ),
    ("/api/ingest", "post"): op(
        "Queue documents for indexing (one document, or a batch of at most 100)",
        "documents",
        {202: INGEST, 200: json_body(ref("IngestAnswer"), "Every document has an outcome")},
        (503,),
        access="write",
        body={"anyOf": [ref("DocumentIn"), ref("BatchIn")]},
        parameters=(wait(MAX_WAIT_S, "the documents to become searchable"),),
    ),
    ("/api/search", "post"): op(
        "Search the indexed documents",
        "documents",
        {200: json_body(ref("SearchAnswer"), "The nearest chunks")},
        (502, 503),
        access="write",
        body=ref("SearchIn"),
    ),
    ("/api/jobs", "get"): op(
        "Workers, queues, dead letters, failed and waiting runs, parked log entries",
        "jobs",
        {200: json_body(ref("Jobs"), "The job view")},
        (503,),
    ),
    ("/events/tasks/{task_id}", "get"): op(
        "A task's events: the replay of its stream, then the live feed",
        "events",
        {200: SSE},
        (404, 422, 503),
        parameters=(
            TASK_ID,
            param("last_event_id", "query", {"type": "string"}, LAST_EVENT_ID),
            param("Last-Event-ID", "header", {"type": "string"}, LAST_EVENT_ID),
        ),
    ),
    ("/events", "get"): op(
        "Every task's events (from the live tail, from a position, or from the start)",
        "events",
        {200: SSE},
        (422, 503),
        parameters=(
            param("last_event_id", "query", {"type": "string"}, LAST_EVENT_ID),
            param("Last-Event-ID", "header", {"type": "string"}, LAST_EVENT_ID),
            param("from", "query", {"enum": ["start"]}, "`start`: replay the whole log first"),
        ),
    ),
    ("/api/session", "post"): op(
        "Sign in with a token: sets the `ragpoc_session` cookie (12 h)",
        "session",
        {200: SESSION, 401: error(401)},
        access="open",
        body=ref("SignIn"),
    ),
    ("/api/session", "get"): op(
        "Who this session is", "session", {200: SESSION, 401: error(401)}, access="open"
    ),
    ("/api/session", "delete"): op(
        "Sign out: clears the cookie",
        "session",
        {204: {"description": "Signed out"}},
        access="open",
    ),
}


def app_operations(routes: list[Any]) -> frozenset[tuple[str, str]]:
    """(path, method) of every route (HEAD is implied by GET; mounts serve files)."""
    return frozenset(
        (route.path, method.lower())
        for route in routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    )


@functools.lru_cache(maxsize=4)
def build_document(operations: frozenset[tuple[str, str]]) -> bytes:
    """The document of `operations` (those with an entry in OPERATIONS), encoded."""
    paths: dict[str, Json] = {}
    for (path, method), operation in OPERATIONS.items():
        if (path, method) in operations:
            paths.setdefault(path, {})[method] = operation
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "rag-poc gateway",
            "version": "1",
            "description": (
                "Tasks, agent runs, documents and their events. Errors are JSON: "
                '`{"error": {"status", "message", ...}}`.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schema_components(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "ragpoc_session"},
            },
        },
        "security": PROTECTED,
    }
    return msgspec.json.encode(document)


async def openapi_json(request: Request) -> Response:
    document = build_document(app_operations(request.app.routes))
    return Response(document, media_type="application/json")


async def docs_page(_request: Request) -> Response:
    return FileResponse(DOCS_PAGE, headers={"cache-control": "no-cache"})


OPENAPI_ROUTES: list[Route] = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
]
