"""Server-sent-event streams for streamed chat and text completions.

A stream sends, for each choice, a first chunk (chat only: delta ``{"role": "assistant"}``),
one chunk per token, and a last chunk with the finish reason; then, when asked for with
``stream_options.include_usage``, a chunk with the usage; then ``data: [DONE]``.

The plan's :class:`~services.mockai.latency.Latency` paces the token chunks (a
:class:`~services.mockai.latency.Pacer`): the time to first token passes before the first token
chunk, one token gap before each next one. A chat stream's role chunk goes at once, before
that wait, as hosted APIs send it: a caller sees the response start, then the model think.

With ``fail_midstream`` the stream sends the first chunk and
:data:`MIDSTREAM_CONTENT_CHUNKS` token chunks, then raises :class:`InjectedStreamFault`, so
the server closes the connection without a finish chunk or ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from libs.common.errors import RagpocError
from services.mockai.latency import INSTANT, Latency, Pacer
from services.mockai.payloads import (
    SSE_DONE,
    ResponseMeta,
    Usage,
    chat_chunk,
    sse_event,
    text_completion_chunk,
    usage_chunk,
)

MIDSTREAM_CONTENT_CHUNKS = 2


class InjectedStreamFault(RagpocError):
    """Raised inside a stream to abort it, as asked for by ``[[mockai:fail-midstream]]``."""


@dataclass(frozen=True, slots=True)
class ChoiceTokens:
    tokens: Sequence[str]
    finish_reason: str


@dataclass(frozen=True, slots=True)
class StreamPlan:
    meta: ResponseMeta
    choices: Sequence[ChoiceTokens]
    usage: Usage
    include_usage: bool = False
    fail_midstream: bool = False
    latency: Latency = INSTANT

    def tokens_to_send(self, choice: ChoiceTokens) -> Sequence[str]:
        if self.fail_midstream:
            return choice.tokens[:MIDSTREAM_CONTENT_CHUNKS]
        return choice.tokens

    def abort(self) -> InjectedStreamFault:
        return InjectedStreamFault(f"stream {self.meta.id} aborted by [[mockai:fail-midstream]]")


async def chat_stream(plan: StreamPlan) -> AsyncIterator[bytes]:
    meta, with_usage, pacer = plan.meta, plan.include_usage, Pacer(plan.latency)
    for index, choice in enumerate(plan.choices):
        yield sse_event(chat_chunk(meta, index, {"role": "assistant"}, include_usage=with_usage))
        for token in plan.tokens_to_send(choice):
            await pacer.before_token()
            yield sse_event(chat_chunk(meta, index, {"content": token}, include_usage=with_usage))
        if plan.fail_midstream:
            raise plan.abort()
        await pacer.before_finish()
        yield sse_event(chat_chunk(meta, index, {}, choice.finish_reason, include_usage=with_usage))
    if with_usage:
        yield sse_event(usage_chunk(meta, "chat.completion.chunk", plan.usage))
    yield SSE_DONE


async def completion_stream(plan: StreamPlan) -> AsyncIterator[bytes]:
    meta, with_usage, pacer = plan.meta, plan.include_usage, Pacer(plan.latency)
    for index, choice in enumerate(plan.choices):
        for token in plan.tokens_to_send(choice):
            await pacer.before_token()
            yield sse_event(text_completion_chunk(meta, index, token, include_usage=with_usage))
        if plan.fail_midstream:
            raise plan.abort()
        await pacer.before_finish()
        yield sse_event(
            text_completion_chunk(meta, index, "", choice.finish_reason, include_usage=with_usage)
        )
    if with_usage:
        yield sse_event(usage_chunk(meta, "text_completion", plan.usage))
    yield SSE_DONE
