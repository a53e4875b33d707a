"""The ingestor's own knobs (chunking, embedding batches), read from the environment once.

Kept here until they move into `libs.common.Settings`; `load_ingest_options` is the only
place that reads them, and a bad value names its variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

import msgspec

__all__ = ["INGEST_ENVIRONMENT", "IngestOptions", "IngestOptionsError", "load_ingest_options"]


class IngestOptionsError(Exception):
    """An ingest setting in the environment is malformed; the message names the variable."""


class IngestOptions(msgspec.Struct, frozen=True, kw_only=True):
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


# variable name -> (field, meaning). The field's default is in IngestOptions.
INGEST_ENVIRONMENT: dict[str, tuple[str, str]] = {
    "RAGPOC_CHUNK_SIZE": ("chunk_size", "largest chunk, in characters"),
    "RAGPOC_CHUNK_OVERLAP": ("chunk_overlap", "characters a chunk repeats from the previous one"),
    "RAGPOC_EMBED_BATCH_SIZE": ("embed_batch_size", "chunks per embeddings request"),
    "RAGPOC_EMBED_TIMEOUT_S": ("embed_timeout_s", "timeout of one embeddings request, seconds"),
    "RAGPOC_EMBED_MAX_RETRIES": (
        "embed_max_retries",
        "retries of a failed embeddings request inside one delivery (the openai client's)",
    ),
}


def load_ingest_options(environ: Mapping[str, str] | None = None) -> IngestOptions:
    env = os.environ if environ is None else environ
    raw = {
        field: value
        for variable, (field, _) in INGEST_ENVIRONMENT.items()
        if (value := env.get(variable))
    }
    try:
        return msgspec.convert(raw, IngestOptions, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        variable = next((v for v, (f, _) in INGEST_ENVIRONMENT.items() if f"$.{f}" in text), "")
        if not variable:  # a rule across fields (__post_init__) names its variables itself
            raise IngestOptionsError(text) from exc
        raise IngestOptionsError(f"environment variable {variable} is invalid: {text}") from exc
