"""A run's question may be longer than the ingestor's search takes (a task's description holds
10,000 characters, /search 4,000): retrieval searches with its beginning instead of failing."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec

from libs.events import Keys
from services.ingestor.app import SearchRequest
from services.runner.retrieval import SEARCH_QUERY_MAX_CHARS, retrieve
from tests.integration.ingeststack import ingest_settings, running_ingestor, running_mockai


def test_the_runner_cuts_the_query_where_the_ingestor_stops_taking_it() -> None:
    [query] = [f for f in msgspec.inspect.type_info(SearchRequest).fields if f.name == "query"]
    assert isinstance(query.type, msgspec.inspect.StrType)
    assert query.type.max_length == SEARCH_QUERY_MAX_CHARS


async def test_a_question_longer_than_search_takes_still_retrieves(
    redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    question = "Why is the sky blue? " + "Some context about the task. " * 400
    assert len(question) > SEARCH_QUERY_MAX_CHARS
    async with running_mockai() as openai_url:
        settings = ingest_settings(redis_url, keys, tmp_path, openai_url)
        async with running_ingestor(settings), httpx.AsyncClient(timeout=10) as http:
            hits = await retrieve(http, settings.ingestor_url, question, 4)
    assert hits == []  # an empty index answers with no hits, not an error
