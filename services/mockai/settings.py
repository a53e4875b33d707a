"""mockai's own knobs, read from the environment once."""

from __future__ import annotations

from typing import Annotated

import msgspec

from libs.common.settings import EnvSettings
from services.mockai.embeddings import DEFAULT_DIMS
from services.mockai.schemas import MAX_EMBEDDING_DIMS

__all__ = ["MockaiSettings"]


class MockaiSettings(EnvSettings, frozen=True, kw_only=True):
    embedding_dims: Annotated[int, msgspec.Meta(ge=1, le=MAX_EMBEDDING_DIMS)] = DEFAULT_DIMS


MockaiSettings.ENVIRONMENT = {
    "MOCKAI_EMBEDDING_DIMS": (
        "embedding_dims",
        f"size of the embeddings mockai returns, 1 to {MAX_EMBEDDING_DIMS}",
    ),
}
