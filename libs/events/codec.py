"""The only place events and commands are turned into bytes and back."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from libs.events.commands import Command, IngestDocuments, RunAgent
from libs.events.doc import DocEvent
from libs.events.errors import EventDecodeError
from libs.events.lock import LockEvent
from libs.events.run import RunEvent
from libs.events.task import TaskEvent

__all__ = [
    "AnyEvent",
    "EventDecodeError",
    "decode_command",
    "decode_doc_event",
    "decode_event",
    "encode",
    "event_to_builtins",
]

AnyEvent = TaskEvent | RunEvent | LockEvent


_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(AnyEvent)
_command_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(kind) for kind in (RunAgent, IngestDocuments)
}
C = TypeVar("C", RunAgent, IngestDocuments)
_doc_decoder = msgspec.json.Decoder(DocEvent)


def encode(message: AnyEvent | DocEvent | Command) -> bytes:
    return _encoder.encode(message)


def decode_event(data: bytes | str) -> AnyEvent:
    try:
        event: AnyEvent = _event_decoder.decode(data)
        return event
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EventDecodeError(f"not a known event: {exc}") from exc


def decode_command(data: bytes | str, kind: type[C]) -> C:
    try:
        command: C = _command_decoders[kind].decode(data)
        return command
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EventDecodeError(f"not a known command: {exc}") from exc


def decode_doc_event(data: bytes | str) -> DocEvent:
    try:
        event: DocEvent = _doc_decoder.decode(data)
        return event
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EventDecodeError(f"not a known document event: {exc}") from exc


def event_to_builtins(event: AnyEvent) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.to_builtins(event)
    return result
