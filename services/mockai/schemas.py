"""Request bodies accepted by mockai, as msgspec Structs.

Unknown fields are ignored (msgspec's default), so the extra parameters real OpenAI clients
send (``top_p``, ``user``, ``seed``, ``tools``, ...) are accepted. Malformed JSON and values of
the wrong type or out of range become OpenAI-shaped 400 errors via :func:`decode_body`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, TypeVar

import msgspec

from services.mockai.errors import OpenAIError, bad_request

MAX_CHOICES = 8
MAX_EMBEDDING_INPUTS = 2048
MAX_EMBEDDING_DIMS = 8192

T = TypeVar("T")

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
TokenId = Annotated[int, msgspec.Meta(ge=0)]
TokenIds = Annotated[list[TokenId], msgspec.Meta(min_length=1)]
ChoiceCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_CHOICES)]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
# msgspec allows one array-like type per union, so "list[str] | list[int] | list[list[int]]" is
# decoded as a list of mixed items and checked for uniformity afterwards.
PromptItems = Annotated[list[NonEmptyStr | TokenId | TokenIds], msgspec.Meta(min_length=1)]
EmbeddingItems = Annotated[
    list[NonEmptyStr | TokenId | TokenIds],
    msgspec.Meta(min_length=1, max_length=MAX_EMBEDDING_INPUTS),
]


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct):
    role: Role
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text; text parts of a multi-part content are joined by newlines."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content if part.text is not None)


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ChatCompletionRequest(msgspec.Struct):
    model: NonEmptyStr
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    n: ChoiceCount | None = None


class CompletionRequest(msgspec.Struct):
    model: NonEmptyStr
    prompt: str | PromptItems
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    max_tokens: PositiveInt | None = None
    n: ChoiceCount | None = None


class EmbeddingRequest(msgspec.Struct):
    model: NonEmptyStr
    input: NonEmptyStr | EmbeddingItems
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=MAX_EMBEDDING_DIMS)] | None = None


def decode_body(body: bytes, request_type: type[T]) -> T:
    """Decode a JSON request body into ``request_type``, raising a 400 :class:`OpenAIError`."""
    try:
        return msgspec.json.decode(body, type=request_type)
    except msgspec.ValidationError as exc:
        raise _validation_error(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise bad_request(
            f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None


_AT_PATH = re.compile(r"^(?P<detail>.*) - at `\$\.?(?P<path>[^`]*)`$", re.DOTALL)
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def _validation_error(text: str) -> OpenAIError:
    detail, path = text, ""
    located = _AT_PATH.match(text)
    if located is not None:
        detail, path = located.group("detail"), located.group("path")
    missing = _MISSING_FIELD.match(detail)
    if missing is not None:
        field = missing.group("field")
        param = f"{path}.{field}" if path else field
        return bad_request(f"Missing required parameter: '{param}'.", param=param)
    if not path:
        return bad_request(f"Invalid request body: {detail}.")
    return bad_request(f"Invalid value for '{path}': {detail}.", param=path)


def chat_messages(request: ChatCompletionRequest) -> list[tuple[str, str]]:
    """The (role, text) of each message; only assistant messages may go without content."""
    for position, message in enumerate(request.messages):
        if message.content is None and message.role != "assistant":
            param = f"messages[{position}].content"
            raise bad_request(f"Missing required parameter: '{param}'.", param=param)
    return [(message.role, message.text()) for message in request.messages]


def prompt_items(prompt: str | list[str | int | list[int]]) -> list[str] | list[list[int]]:
    """The prompts of a completion request: strings, or token-id lists."""
    return _uniform_items(prompt, param="prompt")


def embedding_items(request: EmbeddingRequest) -> list[str] | list[list[int]]:
    """The inputs of an embedding request: strings, or token-id lists."""
    return _uniform_items(request.input, param="input")


def _uniform_items(
    value: str | list[str | int | list[int]], *, param: str
) -> list[str] | list[list[int]]:
    if isinstance(value, str):
        return [value]
    if all(isinstance(item, str) for item in value):
        return [item for item in value if isinstance(item, str)]
    if all(isinstance(item, int) for item in value):
        return [[item for item in value if isinstance(item, int)]]
    if all(isinstance(item, list) for item in value):
        return [item for item in value if isinstance(item, list)]
    raise bad_request(
        f"Invalid value for '{param}': expected a string, an array of strings, an array of "
        "token ids, or an array of token-id arrays, not a mixture.",
        param=param,
    )
