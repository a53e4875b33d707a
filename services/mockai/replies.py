"""Deterministic answers for mockai's chat and completion endpoints.

The answer is a pure function of the conversation (:func:`chat_reply`) or the prompt
(:func:`completion_reply`); the same input always gives the same text, under 80 words:

* A question mentioning the sky (``sky``/``skies``, any case) is answered with
  ``"The sky is blue because of Rayleigh scattering."``.
* Context passages found in the system, developer and user messages are cited: the answer
  quotes the first ~20 words of the first passage, ``According to [1]: "..."``, and points to
  the second one (``See also [2].``) if there is one. A passage is

  - any line formatted like ``[3] some text`` (cited as ``[3]``), or
  - any non-empty line after a line starting with ``Context:`` or ``Sources:`` (text on the
    header line itself counts too), up to a line starting with ``Question:``, ``Query:``,
    ``Q:``, ``Answer:``, ``Task:`` or ``Instructions:``. Such a passage is numbered by its
    position among all passages.

* Without context or sky, the answer echoes the question's key words:
  ``"You asked about paris, capital. This is a deterministic mock answer from mockai."``

Tokens are approximated as whitespace-separated words, both for usage counts and for
streaming, where each chunk carries one word with its following whitespace
(:func:`reply_tokens`), so streamed and non-streamed answers and counts agree.

Fault markers (see :func:`find_fault`), looked for in the last user message or the prompt:

* ``[[mockai:fail]]``: the request is answered with a 500 ``server_error``.
* ``[[mockai:fail-midstream]]``: a streamed answer sends a few chunks and then aborts the
  response (no final chunk, no ``[DONE]``); a non-streamed request is answered normally.

Markers are removed from the text before the answer is composed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal, NamedTuple

FAIL_MARKER = "[[mockai:fail]]"
FAIL_MIDSTREAM_MARKER = "[[mockai:fail-midstream]]"
SKY_ANSWER = "The sky is blue because of Rayleigh scattering."
FALLBACK_ANSWER = "This is a deterministic mock answer from mockai."
MAX_ANSWER_WORDS = 79
MAX_QUOTE_WORDS = 20
MAX_KEYWORDS = 8

Fault = Literal["fail", "fail-midstream"]
FinishReason = Literal["stop", "length"]

_CONTEXT_ROLES = frozenset({"system", "developer", "user"})
_CONTEXT_HEADER = re.compile(r"^\s*(?:context|sources)\s*:(?P<rest>.*)$", re.IGNORECASE)
_CONTEXT_END = re.compile(r"^\s*(?:question|query|q|answer|task|instructions?)\s*:", re.IGNORECASE)
_NUMBERED = re.compile(r"^\s*\[(?P<label>\d+)\]\s*(?P<text>\S.*)$")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]\s+)?")
_SKY = re.compile(r"\bsk(?:y|ies)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_TOKEN = re.compile(r"\S+\s*")
_STOPWORD_TEXT = """
    a about an and are as at be been but by can could did do does for from had has have how i
    in is it its me my of on or please question query should so tell that the their them then
    there these they this to was we were what when where which who why will with would you your
    """
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


class Turn(NamedTuple):
    """One chat message, reduced to its role and text."""

    role: str
    content: str


class Passage(NamedTuple):
    label: str
    text: str


def chat_reply(turns: Sequence[Turn]) -> str:
    """The assistant's answer to a conversation."""
    cleaned = [Turn(turn.role, strip_markers(turn.content)) for turn in turns]
    asked = _question_turn(cleaned)
    found: list[tuple[str | None, str]] = []
    question = ""
    for turn in cleaned:
        if turn.role not in _CONTEXT_ROLES:
            continue
        passages, rest = _split_context(turn.content)
        found.extend(passages)
        if turn is asked:
            question = "\n".join(rest).strip() or turn.content
    if asked is not None and not question:
        question = asked.content
    return compose_answer(question, _number(found))


def completion_reply(prompt: str) -> str:
    """The continuation of a completion prompt: answered like a single user message."""
    return chat_reply([Turn("user", prompt)])


def compose_answer(question: str, passages: Sequence[Passage]) -> str:
    sentences: list[str] = []
    if _SKY.search(question):
        sentences.append(SKY_ANSWER)
    if passages:
        first = passages[0]
        sentences.append(f'According to [{first.label}]: "{_quote(first.text)}"')
        if len(passages) > 1:
            sentences.append(f"See also [{passages[1].label}].")
    if not sentences:
        keywords = _keywords(question)
        if keywords:
            sentences.append(f"You asked about {', '.join(keywords)}.")
        sentences.append(FALLBACK_ANSWER)
    return " ".join(" ".join(sentences).split()[:MAX_ANSWER_WORDS])


def find_fault(text: str) -> Fault | None:
    """The fault a text asks for with a marker, if any (``[[mockai:fail]]`` wins)."""
    if FAIL_MARKER in text:
        return "fail"
    if FAIL_MIDSTREAM_MARKER in text:
        return "fail-midstream"
    return None


def conversation_fault(turns: Sequence[Turn]) -> Fault | None:
    """The fault asked for by the last user message of a conversation, if any."""
    asked = _question_turn(turns)
    return None if asked is None else find_fault(asked.content)


def strip_markers(text: str) -> str:
    return text.replace(FAIL_MARKER, "").replace(FAIL_MIDSTREAM_MARKER, "")


def count_tokens(text: str) -> int:
    """Approximate token count: the number of whitespace-separated words."""
    return len(text.split())


def reply_tokens(text: str, max_tokens: int | None = None) -> tuple[list[str], FinishReason]:
    """Split an answer into stream tokens (each word with its following whitespace).

    With ``max_tokens`` smaller than the answer, the answer is cut there (the last token
    loses its trailing whitespace) and the finish reason is ``"length"``. Joining the
    tokens gives the answer text; ``len(tokens)`` is its completion-token count.
    """
    tokens = _TOKEN.findall(text.strip())
    if max_tokens is None or len(tokens) <= max_tokens:
        return tokens, "stop"
    cut = tokens[:max_tokens]
    cut[-1] = cut[-1].rstrip()
    return cut, "length"


def _question_turn(turns: Sequence[Turn]) -> Turn | None:
    for turn in reversed(turns):
        if turn.role == "user":
            return turn
    return turns[-1] if turns else None


def _split_context(text: str) -> tuple[list[tuple[str | None, str]], list[str]]:
    """Split a message into (label, passage) pairs and the remaining (non-context) lines."""
    passages: list[tuple[str | None, str]] = []
    rest: list[str] = []
    in_context = False
    for raw_line in text.splitlines():
        line = raw_line
        header = _CONTEXT_HEADER.match(line)
        if header is not None:
            in_context = True
            line = header.group("rest")
        elif _CONTEXT_END.match(line):
            in_context = False
        numbered = _NUMBERED.match(line)
        if numbered is not None:
            passages.append((numbered.group("label"), numbered.group("text").strip()))
        elif in_context and line.strip():
            passages.append((None, _BULLET.sub("", line, count=1).strip()))
        elif header is None:
            rest.append(line)
    return passages, rest


def _number(found: Sequence[tuple[str | None, str]]) -> list[Passage]:
    return [
        Passage(label if label is not None else str(position), text)
        for position, (label, text) in enumerate(found, start=1)
    ]


def _quote(text: str) -> str:
    words = text.split()
    quoted = " ".join(words[:MAX_QUOTE_WORDS])
    return quoted + "..." if len(words) > MAX_QUOTE_WORDS else quoted


def _keywords(question: str) -> list[str]:
    keywords: list[str] = []
    for word in _WORD.findall(question.lower()):
        if word not in _STOPWORDS and word not in keywords:
            keywords.append(word)
    return keywords[:MAX_KEYWORDS]
