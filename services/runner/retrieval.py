"""Retrieval for a run: ask the ingestor's `/search` for the chunks nearest the question."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import structlog

from libs.common.errors import RagpocError
from libs.events import RetrievedChunk

__all__ = ["SEARCH_QUERY_MAX_CHARS", "RetrievalFailed", "retrieve"]

log = structlog.get_logger(__name__)

ATTEMPTS = 5  # backoff 0.25, 0.5, 1, 2 s: rides out an ingestor restart of a few seconds
# The ingestor's /search takes queries up to this long. A run's question (a task's title and
# description) may be longer: its beginning is what the search embeds, which keeps the run
# answerable instead of failing it on a 422.
SEARCH_QUERY_MAX_CHARS = 4_000


class RetrievalFailed(RagpocError):
    """The ingestor could not be asked, or answered with an error, after retries."""


class _SearchReply(msgspec.Struct):
    """The ingestor's `POST /search` answer; its hits carry every field of a chunk (and more,
    which is ignored)."""

    hits: list[RetrievedChunk]


async def retrieve(
    http: httpx.AsyncClient, ingestor_url: str, query: str, k: int
) -> list[RetrievedChunk]:
    """Top-k chunks for `query`; retries transient failures with backoff."""
    delay = 0.25
    for attempt in range(1, ATTEMPTS + 1):
        try:
            search = {"query": query[:SEARCH_QUERY_MAX_CHARS], "k": k}
            reply = await http.post(f"{ingestor_url}/search", json=search)
            if reply.status_code < 500:
                break
            problem = f"ingestor answered {reply.status_code}: {reply.text[:200]}"
        except httpx.TransportError as exc:
            problem = f"ingestor unreachable at {ingestor_url}: {type(exc).__name__}: {exc}"
        log.warning("retrieval.retry", attempt=attempt, problem=problem)
        if attempt == ATTEMPTS:
            raise RetrievalFailed(problem)
        await asyncio.sleep(delay)
        delay *= 2
    if reply.status_code != 200:
        raise RetrievalFailed(f"ingestor refused the search ({reply.status_code}): {reply.text}")
    return msgspec.json.decode(reply.content, type=_SearchReply).hits
