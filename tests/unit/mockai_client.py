"""Helpers the mockai tests share (their `http` and `client` fixtures are in conftest.py)."""

from __future__ import annotations

from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

BASE_URL = "http://mockai.test/v1"
SKY_ANSWER = "The sky is blue because of Rayleigh scattering."


def user(text: str) -> ChatCompletionMessageParam:
    return {"role": "user", "content": text}


def system(text: str) -> ChatCompletionMessageParam:
    return {"role": "system", "content": text}


async def collect_chat_stream(
    client: openai.AsyncOpenAI, messages: list[ChatCompletionMessageParam], **params: Any
) -> list[ChatCompletionChunk]:
    stream = await client.chat.completions.create(
        model="mock-gpt", messages=messages, stream=True, **params
    )
    return [chunk async for chunk in stream]
