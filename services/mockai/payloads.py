"""OpenAI-shaped response bodies and server-sent-event framing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

JSONObject = dict[str, Any]

CHAT_MODEL = "mock-gpt"
EMBEDDING_MODEL = "mock-embedding"
MODELS_CREATED = 1_700_000_000
MODEL_IDS = (CHAT_MODEL, EMBEDDING_MODEL)
SSE_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class ResponseMeta:
    """The fields every chunk of one response shares."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> ResponseMeta:
        return cls(id=f"{prefix}-{uuid.uuid4().hex[:24]}", created=int(time.time()), model=model)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int = 0

    def payload(self, *, with_completion: bool = True) -> JSONObject:
        if not with_completion:
            return {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def encode(payload: Mapping[str, Any]) -> bytes:
    return msgspec.json.encode(payload)


def sse_event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


def chat_completion(
    meta: ResponseMeta, contents: Sequence[str], finish_reason: str, usage: Usage
) -> JSONObject:
    return {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            for index, content in enumerate(contents)
        ],
        "usage": usage.payload(),
    }


def chat_chunk(
    meta: ResponseMeta,
    index: int,
    delta: Mapping[str, str],
    finish_reason: str | None = None,
    *,
    include_usage: bool = False,
) -> JSONObject:
    chunk = _chunk_head(meta, "chat.completion.chunk")
    chunk["choices"] = [
        {"index": index, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}
    ]
    if include_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(meta: ResponseMeta, object_type: str, usage: Usage) -> JSONObject:
    """The last chunk of a stream asked for with ``stream_options.include_usage``."""
    chunk = _chunk_head(meta, object_type)
    chunk["choices"] = []
    chunk["usage"] = usage.payload()
    return chunk


def text_completion(
    meta: ResponseMeta, texts: Sequence[str], finish_reasons: Sequence[str], usage: Usage
) -> JSONObject:
    return {
        "id": meta.id,
        "object": "text_completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": None,
        "choices": [
            {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
            for index, (text, finish_reason) in enumerate(zip(texts, finish_reasons, strict=True))
        ],
        "usage": usage.payload(),
    }


def text_completion_chunk(
    meta: ResponseMeta,
    index: int,
    text: str,
    finish_reason: str | None = None,
    *,
    include_usage: bool = False,
) -> JSONObject:
    chunk = _chunk_head(meta, "text_completion")
    chunk["choices"] = [
        {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
    ]
    if include_usage:
        chunk["usage"] = None
    return chunk


def embedding_list(model: str, embeddings: Sequence[list[float] | str], usage: Usage) -> JSONObject:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": embedding}
            for index, embedding in enumerate(embeddings)
        ],
        "model": model,
        "usage": usage.payload(with_completion=False),
    }


def model_card(model_id: str) -> JSONObject:
    return {"id": model_id, "object": "model", "created": MODELS_CREATED, "owned_by": "mockai"}


def model_list() -> JSONObject:
    return {"object": "list", "data": [model_card(model_id) for model_id in MODEL_IDS]}


def _chunk_head(meta: ResponseMeta, object_type: str) -> JSONObject:
    return {
        "id": meta.id,
        "object": object_type,
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": None,
    }
