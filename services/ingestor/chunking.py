"""Split a document's text into overlapping chunks, on sentence boundaries where possible.

Pure functions, no I/O. Sizes are in characters (no tokenizer needed; ~4 characters a token for
English text). A chunk is a run of whole sentences joined by single spaces (paragraphs by a
blank line) of at most `size` characters; a sentence longer than `size` is split between words,
and a word longer than `size` is cut. Each chunk after the first starts with the end of the
previous one: the last whole sentences that fit in `overlap` characters, or, when the last
sentence alone is longer than that, its last words that do.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["chunk_text", "clean_text", "split_sentences"]

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v]*\n\s*")
_WHITESPACE = re.compile(r"\s+")
_PAGE_BREAK = re.compile(r"[\v\f\u2028\u2029\x1c-\x1e\x85]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ufeff\ufffe\uffff]")
# A sentence: the shortest run of text ending in terminal punctuation and any closing quotes or
# brackets, followed by whitespace (CJK full stops need none), or the end of the paragraph.
_CLOSERS = "\"'\u201d\u2019\u00bb)\\]\u300d\u300f"
_SENTENCE = re.compile(
    rf".+?(?:[.!?\u2026]+[{_CLOSERS}]*(?=\s|$)|[\u3002\uff01\uff1f]+[{_CLOSERS}]*|$)"
)


@dataclass(frozen=True, slots=True)
class _Piece:
    text: str
    new_paragraph: bool  # the piece starts a paragraph (joined with a blank line)


def clean_text(text: str) -> str:
    """Normalise a document: NFC, unified newlines, no control characters, trimmed lines."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", _PAGE_BREAK.sub(" ", text))
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of one paragraph, whitespace collapsed."""
    flat = _WHITESPACE.sub(" ", paragraph).strip()
    return [s.strip() for s in _SENTENCE.findall(flat) if s.strip()]


def chunk_text(text: str, *, size: int, overlap: int) -> list[str]:
    """Chunks of at most `size` characters covering `text`, consecutive ones sharing up to
    `overlap` characters. Empty or blank text gives no chunks."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1 character, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be from 0 to size - 1 ({size - 1}), got {overlap}")
    chunks: list[str] = []
    current: list[_Piece] = []
    for piece in _pieces(clean_text(text), size):
        if current and _length([*current, piece]) > size:
            chunks.append(_join(current))
            current = _tail(current, overlap)
            while current and _length([*current, piece]) > size:
                current.pop(0)
        current.append(piece)
    if current:
        chunks.append(_join(current))
    return chunks


def _pieces(text: str, size: int) -> list[_Piece]:
    """Sentences no longer than `size`, in order, marking where paragraphs start."""
    pieces: list[_Piece] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        first = True
        for sentence in split_sentences(paragraph):
            for part in _fit(sentence, size):
                pieces.append(_Piece(part, new_paragraph=first))
                first = False
    return pieces


def _fit(sentence: str, size: int) -> list[str]:
    """A sentence as one piece, or, when longer than `size`, as its words (cut if longer)."""
    if len(sentence) <= size:
        return [sentence]
    parts: list[str] = []
    for word in sentence.split(" "):
        parts.extend(word[start : start + size] for start in range(0, len(word), size))
    return parts


def _tail(pieces: list[_Piece], overlap: int) -> list[_Piece]:
    """The end of a chunk to repeat at the start of the next: whole sentences if any fit."""
    if overlap == 0:
        return []
    tail: list[_Piece] = []
    for piece in reversed(pieces):
        if _length([piece, *tail]) > overlap:
            break
        tail.insert(0, piece)
    if tail:
        return [_Piece(tail[0].text, new_paragraph=False), *tail[1:]]
    words: list[str] = []
    for word in reversed(pieces[-1].text.split(" ")):
        if len(" ".join([word, *words])) > overlap:
            break
        words.insert(0, word)
    return [_Piece(" ".join(words), new_paragraph=False)] if words else []


def _join(pieces: list[_Piece]) -> str:
    text = ""
    for index, piece in enumerate(pieces):
        if index:
            text += "\n\n" if piece.new_paragraph else " "
        text += piece.text
    return text


def _length(pieces: list[_Piece]) -> int:
    """len(_join(pieces)), without building the string."""
    separators = sum(2 if piece.new_paragraph else 1 for piece in pieces[1:])
    return sum(len(piece.text) for piece in pieces) + separators
