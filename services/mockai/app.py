"""mockai: an OpenAI-compatible mock server, so the platform runs without an API key.

Routes (paths as OpenAI's)::

    GET  /health                  {"status": "ok"}
    POST /v1/chat/completions     chat.completion, or a stream of chat.completion.chunk
    POST /v1/completions          text_completion, or a stream of them
    POST /v1/embeddings           list of embeddings (float or base64)
    GET  /v1/models               mock-gpt, mock-embedding
    GET  /v1/models/{model_id}    one model, or 404

Answers are deterministic (see :mod:`services.mockai.replies` and
:mod:`services.mockai.embeddings`). Errors have OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``: 400 for invalid requests, 404 for unknown
models and URLs, 413 for bodies over :data:`MAX_BODY_BYTES`.

Fault injection for testing callers, by a marker in the last user message (or the prompt):

* ``[[mockai:fail]]``: answered with a 500 ``server_error``.
* ``[[mockai:fail-midstream]]`` with ``stream: true``: a few chunks are sent, then the stream
  is aborted (the connection closes without ``data: [DONE]``).

The default embedding size is 256; ``MOCKAI_EMBEDDING_DIMS`` (:class:`MockaiSettings`, read by
:func:`create_app` unless settings are given) overrides it, and a request's ``dimensions``
overrides both.

Latency, like a hosted API's (:mod:`services.mockai.latency`; all zero by default, answering
at once):

* ``MOCKAI_TTFT_MS``: time to the first token of a chat or text completion. A stream sends its
  chat role chunk at once, then waits this long before the first content chunk.
* ``MOCKAI_TOKENS_PER_S``: after the first token, one token every 1/rate seconds (0: no
  pacing). A non-streamed completion of N tokens waits TTFT + (N - 1)/rate, then answers;
  with several choices, N counts the tokens of all of them, as a stream sends them in turn.
* ``MOCKAI_EMBED_MS``: the time of one ``/v1/embeddings`` request, whatever its size.
* ``MOCKAI_PROFILE``: defaults for the three above, each explicit variable winning over it:
  ``hosted-small`` (400 ms, 80 tokens/s, 30 ms) or ``instant`` (all zero).

A request overrides them with headers: ``X-Mockai-Profile`` replaces the server's latency with
a profile's, then ``X-Mockai-TTFT-Ms``, ``X-Mockai-Tokens-Per-S`` and ``X-Mockai-Embed-Ms`` set
one part each; a malformed one is a 400 naming the header. Errors (400s, ``[[mockai:fail]]``)
are answered at once; ``[[mockai:fail-midstream]]`` aborts after its chunks, paced as usual.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from services.mockai import latency, payloads, replies, schemas
from services.mockai.embeddings import embed_text, embed_token_ids, to_base64
from services.mockai.errors import OpenAIError, server_error
from services.mockai.settings import MockaiSettings
from services.mockai.streaming import ChoiceTokens, StreamPlan, chat_stream, completion_stream

MAX_BODY_BYTES = 2 * 1024 * 1024
INJECTED_FAILURE = "The server had an error while processing your request (injected by mockai)."


def create_app(settings: MockaiSettings | None = None) -> Starlette:
    """The mockai ASGI app; `settings` default to the MOCKAI_* variables."""
    settings = settings or MockaiSettings.from_env()
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
        ],
        # Exception (a bug) goes to Starlette's outermost middleware, which answers and
        # re-raises for the server to log; OpenAIError and HTTPException are answered only.
        exception_handlers={
            OpenAIError: handle_error,
            HTTPException: handle_error,
            Exception: handle_error,
        },
    )
    app.state.embedding_dims = settings.embedding_dims
    app.state.latency = settings.latency
    return app


async def health(request: Request) -> Response:
    return _json({"status": "ok"})


async def chat_completions(request: Request) -> Response:
    pace = _request_latency(request)
    body = schemas.decode_body(await _read_body(request), schemas.ChatCompletionRequest)
    turns = [replies.Turn(role, text) for role, text in schemas.chat_messages(body)]
    fault = replies.conversation_fault(turns)
    if fault == "fail":
        raise server_error(INJECTED_FAILURE)
    tokens, finish = replies.reply_tokens(
        replies.chat_reply(turns), body.max_completion_tokens or body.max_tokens
    )
    choices = [ChoiceTokens(tokens, finish)] * (body.n or 1)
    prompt_tokens = sum(replies.count_tokens(turn.content) for turn in turns)
    usage = payloads.Usage(prompt_tokens, len(tokens) * len(choices))
    meta = payloads.ResponseMeta.new("chatcmpl", body.model)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        plan = StreamPlan(meta, choices, usage, include_usage, fault == "fail-midstream", pace)
        return _event_stream(chat_stream(plan))
    await latency.sleep(pace.generation_s(usage.completion_tokens))
    return _json(payloads.chat_completion(meta, ["".join(tokens)] * len(choices), finish, usage))


async def completions(request: Request) -> Response:
    pace = _request_latency(request)
    body = schemas.decode_body(await _read_body(request), schemas.CompletionRequest)
    prompts = [
        item if isinstance(item, str) else " ".join(map(str, item))
        for item in schemas.prompt_items(body.prompt)
    ]
    faults = {replies.find_fault(prompt) for prompt in prompts}
    if "fail" in faults:
        raise server_error(INJECTED_FAILURE)
    choices = [
        ChoiceTokens(*replies.reply_tokens(replies.completion_reply(prompt), body.max_tokens))
        for prompt in prompts
        for _ in range(body.n or 1)
    ]
    prompt_tokens = sum(replies.count_tokens(prompt) for prompt in prompts)
    usage = payloads.Usage(prompt_tokens, sum(len(choice.tokens) for choice in choices))
    meta = payloads.ResponseMeta.new("cmpl", body.model)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        plan = StreamPlan(meta, choices, usage, include_usage, "fail-midstream" in faults, pace)
        return _event_stream(completion_stream(plan))
    await latency.sleep(pace.generation_s(usage.completion_tokens))
    texts = ["".join(choice.tokens) for choice in choices]
    finishes = [choice.finish_reason for choice in choices]
    return _json(payloads.text_completion(meta, texts, finishes, usage))


async def embeddings(request: Request) -> Response:
    pace = _request_latency(request)
    body = schemas.decode_body(await _read_body(request), schemas.EmbeddingRequest)
    dims: int = body.dimensions or request.app.state.embedding_dims
    vectors: list[list[float]] = []
    prompt_tokens = 0
    for item in schemas.embedding_items(body):
        if isinstance(item, str):
            vectors.append(embed_text(item, dims))
            prompt_tokens += replies.count_tokens(item)
        else:
            vectors.append(embed_token_ids(item, dims))
            prompt_tokens += len(item)
    encoded: list[list[float] | str] = (
        [to_base64(vector) for vector in vectors]
        if body.encoding_format == "base64"
        else list(vectors)
    )
    await latency.sleep(pace.embed_s)
    return _json(payloads.embedding_list(body.model, encoded, payloads.Usage(prompt_tokens)))


async def list_models(request: Request) -> Response:
    return _json(payloads.model_list())


async def retrieve_model(request: Request) -> Response:
    model_id: str = request.path_params["model_id"]
    if model_id not in payloads.MODEL_IDS:
        raise OpenAIError(
            404,
            f"The model '{model_id}' does not exist",
            param="model",
            code="model_not_found",
        )
    return _json(payloads.model_card(model_id))


async def handle_error(request: Request, exc: Exception) -> Response:
    """Every error, as an OpenAI-shaped body: ours, Starlette's (404, 405), and bugs (500)."""
    if isinstance(exc, OpenAIError):
        error = exc
    elif isinstance(exc, HTTPException):
        reason = "Invalid URL" if exc.status_code == 404 else exc.detail
        error = OpenAIError(exc.status_code, f"{reason} ({request.method} {request.url.path})")
    else:
        error = server_error("The server had an error while processing your request.")
    return _json(error.payload(), status_code=error.status_code)


def _request_latency(request: Request) -> latency.Latency:
    """The server's latency with this request's ``X-Mockai-*`` headers over it."""
    server: latency.Latency = request.app.state.latency
    return latency.for_request(server, request.headers)


async def _read_body(request: Request) -> bytes:
    """The request body, refused with a 413 once it exceeds :data:`MAX_BODY_BYTES`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> OpenAIError:
    return OpenAIError(
        413,
        f"The request body is larger than the limit of {MAX_BODY_BYTES} bytes.",
        code="request_too_large",
    )


def _json(payload: Mapping[str, Any], *, status_code: int = 200) -> Response:
    return Response(
        payloads.encode(payload), status_code=status_code, media_type="application/json"
    )


def _event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
