"""What the gateway's endpoints answer, as msgspec Structs: the OpenAPI document
(`services.gateway.openapi`) generates its response schemas from them.

The endpoints build their bodies as dicts (`task_json`, `QueuedRun.body`, the jobs view ...);
these types describe those bodies. Where a body is a read model or an event plus a few fields,
the type extends that read model or event, so a field added there shows up here too. A field
that only some answers carry is `UnsetType` (absent, not null, when it does not apply).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from libs.events import (
    AnyEvent,
    LockAcquired,
    LockConflict,
    LockExpired,
    LockLost,
    LockReleased,
)
from libs.events.run import RetrievedChunk, RunSuperseded
from libs.events.workers import WorkerInfo
from libs.readmodels import ActivityItem, RunStatus, RunView, TaskView
from services.gateway.ingest_api import BatchIn, DocumentIn, SearchIn
from services.gateway.runs_api import RunRequest
from services.gateway.session_api import SignIn
from services.gateway.tasks_api import CreateTask

__all__ = [
    "REF",
    "REQUEST_TYPES",
    "RESPONSE_TYPES",
    "SSE_EVENT",
    "Activity",
    "ActivityList",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "IngestAnswer",
    "Jobs",
    "LockHistory",
    "LockHistoryEvent",
    "Readiness",
    "RunAnswer",
    "SearchAnswer",
    "SearchHit",
    "Session",
    "Task",
    "TaskDetail",
    "TaskList",
    "schema_components",
]

REF = "#/components/schemas/{name}"


class ErrorDetail(msgspec.Struct, kw_only=True):
    """Every 4xx/5xx answer: its status and a message that says what to do; some errors add
    details (a 409 names the run holding the task, a 413 its limit, a 503 the dependency)."""

    status: int
    message: str


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"]


class Readiness(msgspec.Struct, kw_only=True):
    """Each part's state: "ok" or "unavailable: <why>"; `degraded` names the parts not ok."""

    status: Literal["ok", "unavailable"]
    redis: str
    database: str
    hub: str
    degraded: list[str] | UnsetType = UNSET


class Task(TaskView, frozen=True, kw_only=True):
    events_url: str


class TaskDetail(Task, frozen=True, kw_only=True):
    run_history: list[RunView]


class TaskList(msgspec.Struct, kw_only=True):
    tasks: list[Task]


class Activity(ActivityItem, frozen=True, kw_only=True):
    """An Activity item and the task as the projection saw it right after that event."""

    task: TaskView | None


class ActivityList(msgspec.Struct, kw_only=True):
    activity: list[Activity]


# The events a task's lock history holds; each item also carries `id`, its task-stream id.
LockHistoryEvent = (
    LockAcquired | LockConflict | LockLost | LockExpired | LockReleased | RunSuperseded
)


class LockHistory(msgspec.Struct, kw_only=True):
    """`locks`: the lock events, newest first (their schema is added by the document)."""

    task_id: int
    locks: list[dict[str, Any]]


class RunAnswer(msgspec.Struct, kw_only=True):
    """A queued run (202), or with `?wait` the run's outcome (200) when it ended in time:
    `answer`, `sources` and `duration_s` when done, `error` when failed or superseded."""

    task_id: int
    run_id: str
    fence: int
    status: RunStatus
    events_url: str
    replayed: bool | UnsetType = UNSET
    message: str | UnsetType = UNSET
    answer: str | UnsetType = UNSET
    sources: list[RetrievedChunk] | UnsetType = UNSET
    duration_s: float | UnsetType = UNSET
    error: str | UnsetType = UNSET


class DocumentOutcome(msgspec.Struct, kw_only=True):
    doc_id: str
    status: Literal["ingested", "failed", "pending"]
    chunks: int | UnsetType = UNSET
    reason: str | UnsetType = UNSET


class IngestAnswer(msgspec.Struct, kw_only=True):
    """`queued` (202, no `?wait`), `done` (200: every document has an outcome) or `pending`
    (202: the wait ran out first). `document_ids` follow the request's order."""

    batch_id: str
    document_ids: list[str]
    status: Literal["queued", "done", "pending"]
    message: str | UnsetType = UNSET
    documents: list[DocumentOutcome] | UnsetType = UNSET


class SearchHit(msgspec.Struct, kw_only=True):
    """A chunk the ingestor found (services.ingestor.vectors.SearchHit, which the gateway
    passes on verbatim; a test checks the two have the same fields)."""

    id: str
    score: float
    doc_id: str
    chunk_index: int
    title: str
    source: str
    text: str
    metadata: dict[str, Any]


class SearchAnswer(msgspec.Struct, kw_only=True):
    query: str
    hits: list[SearchHit]


class Worker(WorkerInfo, frozen=True, kw_only=True):
    started: str | None
    seen: str | None


class PendingEntry(msgspec.Struct, kw_only=True):
    id: str
    stream: str  # entry ids are per stream: the runners' pending entries span partitions
    consumer: str
    idle_ms: int
    deliveries: int
    consumer_live: bool


class DeadLetter(msgspec.Struct, kw_only=True):
    id: str
    stream: str  # the command stream the entry was dead-lettered from
    reason: str
    deliveries: int | None
    source_id: str
    task_id: int | UnsetType = UNSET
    run_id: str | UnsetType = UNSET
    batch_id: str | UnsetType = UNSET


class ServiceJobs(msgspec.Struct, kw_only=True):
    """One service's consumer group over its command streams (the runners': one per partition,
    plus the pre-partition stream while it exists): lag and pending_count summed over them."""

    streams: list[str]
    group: str
    workers: list[Worker]
    lag: int | None
    pending_count: int
    notes: list[str]
    pending: list[PendingEntry]
    dead_letters: list[DeadLetter]


class Services(msgspec.Struct, kw_only=True):
    runner: ServiceJobs
    ingestor: ServiceJobs


class FailedRun(msgspec.Struct, kw_only=True):
    run_id: str
    task_id: int
    status: RunStatus
    error: str
    finished_at: float | None
    finished: str | None


class WaitingRun(msgspec.Struct, kw_only=True):
    task_id: int
    run_id: str
    queued_at: str | None
    claim_expires_at: str | None
    claim_expired: bool
    entry_id: str | None
    reason: str


class ParkedEntry(msgspec.Struct, kw_only=True):
    partition: int
    log_id: str
    task_id: int | None
    stream_id: str
    type: str
    reason: str
    parked_at: float
    parked: str | None


class Parked(msgspec.Struct, kw_only=True):
    count: int
    entries: list[ParkedEntry]


class Jobs(msgspec.Struct, kw_only=True):
    services: Services
    failed_runs: list[FailedRun]
    waiting: list[WaitingRun]
    parked: Parked


class Session(msgspec.Struct, kw_only=True):
    """Who the session is (`name`, `scope`); `auth` is "off" when the gateway has no tokens."""

    name: str
    scope: Literal["read", "write"]
    auth: Literal["on", "off"]


RESPONSE_TYPES: tuple[Any, ...] = (
    ErrorBody,
    Health,
    Readiness,
    Task,
    TaskDetail,
    TaskList,
    ActivityList,
    LockHistory,
    RunAnswer,
    IngestAnswer,
    SearchAnswer,
    Jobs,
    Session,
)
# One event of an event stream (an event stream's `schema` describes each event): `id:` the
# position to resume from, `event:` the event's type, `data:` the event as JSON.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "event": {"type": "string"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": REF.format(name="Event")},
        },
    },
    "required": ["id", "event", "data"],
}

# What the endpoints decode: the Structs themselves, so the document follows every change.
REQUEST_TYPES: tuple[Any, ...] = (
    CreateTask,
    RunRequest,
    DocumentIn,
    BatchIn,
    SearchIn,
    SignIn,
)


def schema_components() -> dict[str, Any]:
    """The JSON Schemas of the request and response types, by name (`#/components/schemas`)."""
    (event, lock_event, *_), schemas = msgspec.json.schema_components(
        [AnyEvent, LockHistoryEvent, *REQUEST_TYPES, *RESPONSE_TYPES], ref_template=REF
    )
    schemas["Event"] = event  # the `data:` of every Server-Sent Event
    schemas["LockHistoryEvent"] = lock_event
    # each item of a lock history is a lock event plus `id`, its task-stream entry id
    schemas["LockHistory"]["properties"]["locks"]["items"] = {
        "allOf": [
            {"$ref": REF.format(name="LockHistoryEvent")},
            {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        ]
    }
    return dict(sorted(schemas.items()))
