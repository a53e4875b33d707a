"""The agent itself: retrieve context, then ask the chat model the run's question with it,
streaming the answer as events appended under the run's lock (a run that lost its lock cannot
append), coalesced by `deltas.stream_deltas`."""

from __future__ import annotations

from collections.abc import Sequence

from openai import AsyncOpenAI

from libs.commandside.locks import Lease
from libs.common import Settings
from libs.events import EventStore, RetrievedChunk, RunAgent
from services.runner.deltas import stream_deltas

__all__ = ["SYSTEM_PROMPT", "ask_model", "build_prompt"]

SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the question briefly, using the numbered context "
    "passages when they are relevant, and cite them as [n]."
)


def build_prompt(question: str, context: Sequence[RetrievedChunk]) -> str:
    if not context:
        return f"Question: {question}"
    passages = "\n".join(f"[{n}] {chunk.text}" for n, chunk in enumerate(context, start=1))
    return f"Context:\n{passages}\n\nQuestion: {question}"


async def ask_model(
    command: RunAgent,
    lease: Lease,
    context: Sequence[RetrievedChunk],
    *,
    store: EventStore,
    llm: AsyncOpenAI,
    settings: Settings,
) -> str:
    stream = await llm.chat.completions.create(
        model=settings.chat_model,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": build_prompt(command.question, context)},
        ],
        stream=True,
    )
    pieces = (chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices)
    return await stream_deltas(pieces, command, lease, store, settings.delta_interval_ms / 1000)
