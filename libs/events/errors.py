"""The event library's errors, under one root."""

from __future__ import annotations

from libs.common.errors import RagpocError

__all__ = ["EventDecodeError", "EventsError", "LockNotHeld"]


class EventsError(RagpocError):
    """Root of the event library's errors."""


class EventDecodeError(EventsError, ValueError):
    """Bytes that are not a known event or command (corrupt entry or unknown `type`)."""


class LockNotHeld(EventsError):
    """The run tried to append under a lock it no longer holds; nothing was written."""
