"""One agent run: ask the chat model the task's question, streaming the answer as events."""

from __future__ import annotations

import asyncio
import time
from typing import TypedDict

import structlog
from openai import AsyncOpenAI

from libs.common import Settings
from libs.events import EventStore, LlmDelta, RunAgent, RunCompleted, RunFailed, RunStarted

__all__ = ["SYSTEM_PROMPT", "execute_run"]

log = structlog.get_logger(__name__)


class RunIds(TypedDict):
    task_id: int
    run_id: str
    fence: int


SYSTEM_PROMPT = "You are a helpful assistant. Answer the question briefly."


async def execute_run(
    command: RunAgent, *, store: EventStore, llm: AsyncOpenAI, settings: Settings, worker: str
) -> None:
    started = time.monotonic()
    base = RunIds(task_id=command.task_id, run_id=command.run_id, fence=command.fence)
    await store.append(RunStarted(**base, worker=worker))
    if settings.test_hold_seconds > 0:
        await asyncio.sleep(settings.test_hold_seconds)
    try:
        answer = await _ask(command, store=store, llm=llm, settings=settings)
    except Exception as exc:
        reason = f"LLM call failed: {type(exc).__name__}: {exc}"
        log.warning("run.failed", reason=reason)
        await store.append(RunFailed(**base, reason=reason, duration_s=time.monotonic() - started))
        return
    duration = time.monotonic() - started
    await store.append(RunCompleted(**base, answer=answer, duration_s=duration))
    log.info("run.completed", duration_s=round(duration, 3), answer_chars=len(answer))


async def _ask(
    command: RunAgent, *, store: EventStore, llm: AsyncOpenAI, settings: Settings
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
            await store.append(
                LlmDelta(
                    task_id=command.task_id,
                    run_id=command.run_id,
                    fence=command.fence,
                    index=len(parts),
                    text=text,
                )
            )
            parts.append(text)
    return "".join(parts)
