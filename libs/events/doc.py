"""Events of document ingestion. Documents are not tasks: these go to the docs stream
(`Keys.doc_events`), with their own envelope."""

from __future__ import annotations

from typing import Any

import msgspec

from libs.events.envelope import now

__all__ = ["DocEvent", "DocFailed", "DocIngested"]


class _DocEnvelope(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    doc_id: str
    batch_id: str = ""
    at: float = msgspec.field(default_factory=now)
    v: int = 1


class DocIngested(_DocEnvelope, frozen=True, kw_only=True, tag="doc.ingested"):
    """A document is searchable: cut into `chunks`, embedded with `dims` dimensions."""

    title: str = ""
    source: str = ""
    chunks: int
    dims: int
    duration_s: float
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class DocFailed(_DocEnvelope, frozen=True, kw_only=True, tag="doc.failed"):
    """A document could not be indexed; `reason` says why."""

    reason: str


DocEvent = DocIngested | DocFailed
