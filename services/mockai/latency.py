"""How long mockai takes to answer, so callers meet latencies like a hosted API's.

A :class:`Latency` has three parts: the time to the first token of a chat or text completion,
the rate of the tokens after it, and the time of one embeddings request. The server's latency
comes from the ``MOCKAI_*`` settings (:func:`resolve`): a named profile (:data:`PROFILES`)
gives the defaults, and each explicit variable wins over it. A request may override it with
headers (:func:`for_request`): ``X-Mockai-Profile`` replaces the server's latency with a
profile's, then ``X-Mockai-TTFT-Ms``, ``X-Mockai-Tokens-Per-S`` and ``X-Mockai-Embed-Ms``
replace one part each.

Every wait is an ``asyncio.sleep``: a slow answer never holds up the others.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from services.mockai.errors import OpenAIError, bad_request

__all__ = [
    "INSTANT",
    "MAX_DELAY_MS",
    "MAX_TOKENS_PER_S",
    "PROFILES",
    "Latency",
    "Pacer",
    "for_request",
    "resolve",
    "sleep",
    "unknown_profile",
]

MAX_DELAY_MS = 600_000.0
MAX_TOKENS_PER_S = 1_000_000.0

PROFILE_HEADER = "X-Mockai-Profile"
TTFT_HEADER = "X-Mockai-TTFT-Ms"
TOKENS_PER_S_HEADER = "X-Mockai-Tokens-Per-S"
EMBED_HEADER = "X-Mockai-Embed-Ms"


@dataclass(frozen=True, slots=True)
class Latency:
    """Seconds to the first token, tokens per second after it (0: all at once), and seconds
    per embeddings request. All zero: mockai answers at once."""

    ttft_s: float = 0.0
    tokens_per_s: float = 0.0
    embed_s: float = 0.0

    @property
    def token_gap_s(self) -> float:
        """The wait between two successive tokens."""
        return 1.0 / self.tokens_per_s if self.tokens_per_s > 0 else 0.0

    def generation_s(self, tokens: int) -> float:
        """How long `tokens` tokens take to generate: the same whether streamed or not."""
        return self.ttft_s + max(tokens - 1, 0) * self.token_gap_s


INSTANT = Latency()

PROFILES: Mapping[str, Latency] = {
    "instant": INSTANT,
    "hosted-small": Latency(ttft_s=0.4, tokens_per_s=80.0, embed_s=0.03),
}


def resolve(
    profile: str, ttft_ms: float | None, tokens_per_s: float | None, embed_ms: float | None
) -> Latency:
    """The profile's latency (none: all zero) with each explicitly given part put over it.
    `profile` must be "" or a key of :data:`PROFILES`."""
    base = PROFILES[profile] if profile else INSTANT
    return Latency(
        ttft_s=base.ttft_s if ttft_ms is None else ttft_ms / 1000,
        tokens_per_s=base.tokens_per_s if tokens_per_s is None else tokens_per_s,
        embed_s=base.embed_s if embed_ms is None else embed_ms / 1000,
    )


def unknown_profile(name: str) -> str:
    """Why `name` is not a profile, listing the ones there are."""
    return f"unknown profile {name!r}; known profiles: {', '.join(sorted(PROFILES))}"


def for_request(server: Latency, headers: Mapping[str, str]) -> Latency:
    """The latency of one request: the server's, overridden by its ``X-Mockai-*`` headers.
    A malformed header is a 400 naming it. `headers` must look names up case-insensitively
    (Starlette's do)."""
    latency = server
    if profile := headers.get(PROFILE_HEADER, "").strip():
        if profile not in PROFILES:
            raise _bad_header(PROFILE_HEADER, unknown_profile(profile))
        latency = PROFILES[profile]
    if (ttft_ms := _number(headers, TTFT_HEADER, MAX_DELAY_MS)) is not None:
        latency = replace(latency, ttft_s=ttft_ms / 1000)
    if (rate := _number(headers, TOKENS_PER_S_HEADER, MAX_TOKENS_PER_S)) is not None:
        latency = replace(latency, tokens_per_s=rate)
    if (embed_ms := _number(headers, EMBED_HEADER, MAX_DELAY_MS)) is not None:
        latency = replace(latency, embed_s=embed_ms / 1000)
    return latency


class Pacer:
    """Paces the token chunks of one stream: the time to first token before the first, then
    one token gap before each next one, across all the stream's choices (they are generated
    one after the other, as they are sent)."""

    def __init__(self, latency: Latency) -> None:
        self._latency = latency
        self._started = False

    async def before_token(self) -> None:
        delay = self._latency.token_gap_s if self._started else self._latency.ttft_s
        self._started = True
        await sleep(delay)

    async def before_finish(self) -> None:
        """A stream without any token still takes the time to first token before it ends."""
        if not self._started:
            await self.before_token()


async def sleep(seconds: float) -> None:
    """Wait `seconds`, without even yielding when there is nothing to wait for."""
    if seconds > 0:
        await asyncio.sleep(seconds)


def _number(headers: Mapping[str, str], name: str, maximum: float) -> float | None:
    """The header's value as a number from 0 to `maximum`; None when it is absent or empty."""
    raw = headers.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= maximum:  # also refuses nan and infinities
        raise _bad_header(name, f"expected a number from 0 to {maximum:g}, got {raw!r}")
    return value


def _bad_header(name: str, problem: str) -> OpenAIError:
    return bad_request(f"Invalid value for header '{name}': {problem}.", param=name)
