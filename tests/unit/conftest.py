"""Unit-test fixtures: the official openai client on mockai's ASGI app (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from services.mockai import create_app
from tests.unit.mockai_client import BASE_URL


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://mockai.test") as client:
        yield client


@pytest.fixture
async def client(http: httpx.AsyncClient) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key="x", base_url=BASE_URL, http_client=http, max_retries=0
    ) as client:
        yield client
