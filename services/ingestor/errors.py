"""The ingestor's exceptions, under one root."""

from __future__ import annotations

from libs.common.errors import RagpocError

__all__ = ["IndexMismatch", "IngestError", "UnusableDocument"]


class IngestError(RagpocError):
    """Root of the ingestor's own errors."""


class UnusableDocument(IngestError):
    """A document that can never be indexed (no text left, rejected by the embedding API):
    reported as `doc.failed` at once, never retried."""


class IndexMismatch(IngestError):
    """The collection and the embedding model disagree (e.g. vector sizes): a configuration
    problem, retried and then dead-lettered with this message."""
