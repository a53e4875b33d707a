"""Event and command types, stream/key names, append/read helpers and the consumer loop."""

from libs.events.codec import (
    AnyEvent,
    EventDecodeError,
    decode_command,
    decode_doc_event,
    decode_event,
    encode,
    event_to_builtins,
)
from libs.events.commands import Command, DocumentToIngest, IngestDocuments, RunAgent
from libs.events.consumer import ConsumerOptions, GroupConsumer, consumer_name
from libs.events.doc import DocEvent, DocFailed, DocIngested
from libs.events.envelope import Event, now
from libs.events.errors import RunAlreadyEnded
from libs.events.lock import (
    LockAcquired,
    LockConflict,
    LockEvent,
    LockExpired,
    LockLost,
    LockReleased,
)
from libs.events.names import INGESTORS_GROUP, RUNNERS_GROUP, Keys
from libs.events.run import (
    LlmDelta,
    RetrievalDone,
    RetrievedChunk,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunRequested,
    RunStarted,
    RunSuperseded,
)
from libs.events.store import Appended, EventStore, LockNotHeld, StoredEvent, connect_redis
from libs.events.task import TaskCreated, TaskEvent

__all__ = [
    "INGESTORS_GROUP",
    "RUNNERS_GROUP",
    "AnyEvent",
    "Appended",
    "Command",
    "ConsumerOptions",
    "DocEvent",
    "DocFailed",
    "DocIngested",
    "DocumentToIngest",
    "Event",
    "EventDecodeError",
    "EventStore",
    "GroupConsumer",
    "IngestDocuments",
    "Keys",
    "LlmDelta",
    "LockAcquired",
    "LockConflict",
    "LockEvent",
    "LockExpired",
    "LockLost",
    "LockNotHeld",
    "LockReleased",
    "RetrievalDone",
    "RetrievedChunk",
    "RunAgent",
    "RunAlreadyEnded",
    "RunCompleted",
    "RunEvent",
    "RunFailed",
    "RunRequested",
    "RunStarted",
    "RunSuperseded",
    "StoredEvent",
    "TaskCreated",
    "TaskEvent",
    "connect_redis",
    "consumer_name",
    "decode_command",
    "decode_doc_event",
    "decode_event",
    "encode",
    "event_to_builtins",
    "now",
]
