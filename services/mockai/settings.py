"""mockai's own knobs, read from the environment once."""

from __future__ import annotations

from typing import Annotated

import msgspec

from libs.common.settings import EnvSettings, SettingsError
from services.mockai.embeddings import DEFAULT_DIMS
from services.mockai.latency import (
    MAX_DELAY_MS,
    MAX_TOKENS_PER_S,
    PROFILES,
    Latency,
    resolve,
    unknown_profile,
)
from services.mockai.schemas import MAX_EMBEDDING_DIMS

__all__ = ["MockaiSettings"]

DelayMs = Annotated[float, msgspec.Meta(ge=0, le=MAX_DELAY_MS)]
TokensPerS = Annotated[float, msgspec.Meta(ge=0, le=MAX_TOKENS_PER_S)]


class MockaiSettings(EnvSettings, frozen=True, kw_only=True):
    """The latency parts are None when not set, so that a profile can tell "unset" (the
    profile's value) from an explicit 0 (which wins over it)."""

    embedding_dims: Annotated[int, msgspec.Meta(ge=1, le=MAX_EMBEDDING_DIMS)] = DEFAULT_DIMS
    profile: str = ""
    ttft_ms: DelayMs | None = None
    tokens_per_s: TokensPerS | None = None
    embed_ms: DelayMs | None = None

    def __post_init__(self) -> None:
        if self.profile and self.profile not in PROFILES:
            raise SettingsError(
                f"environment variable MOCKAI_PROFILE is invalid: {unknown_profile(self.profile)}"
            )

    @property
    def latency(self) -> Latency:
        """The server's latency: the profile's, with each explicit variable over it."""
        return resolve(self.profile, self.ttft_ms, self.tokens_per_s, self.embed_ms)


MockaiSettings.ENVIRONMENT = {
    "MOCKAI_EMBEDDING_DIMS": (
        "embedding_dims",
        f"size of the embeddings mockai returns, 1 to {MAX_EMBEDDING_DIMS}",
    ),
    "MOCKAI_PROFILE": (
        "profile",
        f"latency profile giving the defaults of the three below: {', '.join(sorted(PROFILES))}",
    ),
    "MOCKAI_TTFT_MS": (
        "ttft_ms",
        "time to the first token of a chat or text completion, in ms (default 0)",
    ),
    "MOCKAI_TOKENS_PER_S": (
        "tokens_per_s",
        "pace of the tokens after the first (default 0: no pacing)",
    ),
    "MOCKAI_EMBED_MS": ("embed_ms", "time one /v1/embeddings request takes, in ms (default 0)"),
}
