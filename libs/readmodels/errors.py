"""The read models' errors, under one root."""

from __future__ import annotations

from libs.common.errors import RagpocError

__all__ = ["LostRace", "ReadModelsError"]


class ReadModelsError(RagpocError):
    """Root of the read-model library's errors."""


class LostRace(ReadModelsError):
    """Another projector advanced the position first; this transaction rolls back."""
