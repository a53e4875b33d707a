"""The root of every error rag-poc raises on purpose.

Each library and service derives its own root from `RagpocError` (`EventsError`,
`CommandSideError`, `ReadModelsError`, `IngestError`, ...), so a caller can catch one package's
failures, and the gateway maps them to HTTP answers in one place.
"""

from __future__ import annotations

__all__ = ["RagpocError"]


class RagpocError(Exception):
    """Something rag-poc refused or could not do; the message says what, and what to do next."""
