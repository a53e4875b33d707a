"""Commands: what a service is asked to do. Named as verbs, carried on the command streams."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Command", "DocumentToIngest", "IngestDocuments", "RunAgent"]


class RunAgent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="run"):
    """Run the agent once for a task. Sent to its partition's `ragpoc:{pK}:cmd:run`."""

    task_id: int
    run_id: str
    fence: int = 0
    question: str
    hold_seconds: float = 0.0  # keep the run busy (tests; honoured only with RAGPOC_DEV=1)
    v: int = 1


class DocumentToIngest(msgspec.Struct, frozen=True, kw_only=True):
    doc_id: str
    text: str
    title: str = ""
    source: str = ""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class IngestDocuments(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="ingest"):
    """Chunk, embed and index these documents. Sent to `ragpoc:cmd:ingest`."""

    batch_id: str
    documents: list[DocumentToIngest]
    v: int = 1


Command = RunAgent | IngestDocuments
