"""The event library's errors, under one root."""

from __future__ import annotations

from libs.common.errors import RagpocError

__all__ = ["EventDecodeError", "EventsError", "LockNotHeld", "RunAlreadyEnded"]


class EventsError(RagpocError):
    """Root of the event library's errors."""


class EventDecodeError(EventsError, ValueError):
    """Bytes that are not a known event or command (corrupt entry or unknown `type`)."""


class LockNotHeld(EventsError):
    """The run tried to append under a lock it no longer holds; nothing was written."""


class RunAlreadyEnded(EventsError):
    """A run's terminal event was refused: the run has one already (its outcome marker is set),
    written by this writer on an earlier try whose reply was lost, or by another; nothing was
    written."""
