"""The ingestor's own knobs (chunking, embedding batches), read from the environment once."""

from __future__ import annotations

from typing import Annotated

import msgspec

from libs.common.settings import EnvSettings

__all__ = ["IngestSettings"]


class IngestSettings(EnvSettings, frozen=True, kw_only=True):
    chunk_size: Annotated[int, msgspec.Meta(ge=50, le=100_000)] = 1_000
    chunk_overlap: Annotated[int, msgspec.Meta(ge=0)] = 150
    embed_batch_size: Annotated[int, msgspec.Meta(ge=1, le=2_048)] = 64
    embed_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    embed_max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2

    def __post_init__(self) -> None:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"RAGPOC_CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than "
                f"RAGPOC_CHUNK_SIZE ({self.chunk_size})"
            )


IngestSettings.ENVIRONMENT = {
    "RAGPOC_CHUNK_SIZE": ("chunk_size", "largest chunk, in characters"),
    "RAGPOC_CHUNK_OVERLAP": ("chunk_overlap", "characters a chunk repeats from the previous one"),
    "RAGPOC_EMBED_BATCH_SIZE": ("embed_batch_size", "chunks per embeddings request"),
    "RAGPOC_EMBED_TIMEOUT_S": ("embed_timeout_s", "timeout of one embeddings request, seconds"),
    "RAGPOC_EMBED_MAX_RETRIES": (
        "embed_max_retries",
        "retries of a failed embeddings request inside one delivery (the openai client's)",
    ),
}
