"""The agent itself: ask the chat model the run's question, streaming the answer as events
appended under the run's lock (a run that lost its lock cannot append)."""

from __future__ import annotations

from openai import AsyncOpenAI

from libs.common import Settings
from libs.events import EventStore, LlmDelta, RunAgent
from libs.events.locks import Lease

__all__ = ["SYSTEM_PROMPT", "ask_model"]

SYSTEM_PROMPT = "You are a helpful assistant. Answer the question briefly."


async def ask_model(
    command: RunAgent, lease: Lease, *, store: EventStore, llm: AsyncOpenAI, settings: Settings
) -> str:
    stream = await llm.chat.completions.create(
        model=settings.chat_model,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": command.question},
        ],
        stream=True,
    )
    parts: list[str] = []
    async for chunk in stream:
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            delta = LlmDelta(
                task_id=command.task_id,
                run_id=command.run_id,
                fence=lease.fence,
                index=len(parts),
                text=text,
            )
            await store.append(delta, lock_token=lease.token)
            parts.append(text)
    return "".join(parts)
