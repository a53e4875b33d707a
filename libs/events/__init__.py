"""Event and command types, stream/key names, append/read helpers and the consumer loop."""

from libs.events.codec import (
    AnyEvent,
    EventDecodeError,
    decode_command,
    decode_event,
    encode,
    event_to_builtins,
)
from libs.events.commands import Command, RunAgent
from libs.events.consumer import ConsumerOptions, GroupConsumer, consumer_name
from libs.events.envelope import Event, now
from libs.events.names import INGESTORS_GROUP, RUNNERS_GROUP, Keys
from libs.events.run import LlmDelta, RunCompleted, RunEvent, RunFailed, RunRequested, RunStarted
from libs.events.store import Appended, EventStore, LockLost, StoredEvent, connect_redis
from libs.events.task import TaskCreated, TaskEvent

__all__ = [
    "INGESTORS_GROUP",
    "RUNNERS_GROUP",
    "AnyEvent",
    "Appended",
    "Command",
    "ConsumerOptions",
    "Event",
    "EventDecodeError",
    "EventStore",
    "GroupConsumer",
    "Keys",
    "LlmDelta",
    "LockLost",
    "RunAgent",
    "RunCompleted",
    "RunEvent",
    "RunFailed",
    "RunRequested",
    "RunStarted",
    "StoredEvent",
    "TaskCreated",
    "TaskEvent",
    "connect_redis",
    "consumer_name",
    "decode_command",
    "decode_event",
    "encode",
    "event_to_builtins",
    "now",
]
