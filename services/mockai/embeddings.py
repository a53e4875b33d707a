"""Deterministic text embeddings from hashed word features.

A text is lowercased and split into word tokens (``\\w+``). Each word, and with half the
weight each pair of adjacent words, is hashed with BLAKE2b (stable across processes, unlike
Python's salted ``hash()``) into one of ``dims`` buckets with a sign taken from the hash. The
sum is L2-normalised and rounded to float32, so the float and base64 encodings of a vector are
the same numbers. Texts that share words therefore have a higher cosine similarity than texts
that share none. A text without any word gets a fixed unit vector (``[1, 0, 0, ...]``).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import re
import struct
from collections.abc import Iterator, Sequence

DEFAULT_DIMS = 256
BIGRAM_WEIGHT = 0.5

_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """The lowercased word tokens of a text."""
    return _WORD.findall(text.lower())


def embed_text(text: str, dims: int = DEFAULT_DIMS) -> list[float]:
    """The unit-length embedding of a text."""
    return embed_words(tokenize(text), dims)


def embed_token_ids(token_ids: Sequence[int], dims: int = DEFAULT_DIMS) -> list[float]:
    """The embedding of pre-tokenised input: each token id is treated as a word."""
    return embed_words([str(token_id) for token_id in token_ids], dims)


def embed_words(words: Sequence[str], dims: int = DEFAULT_DIMS) -> list[float]:
    """The unit-length embedding of a sequence of words."""
    if dims < 1:
        raise ValueError(f"dims must be at least 1, got {dims}")
    vector = [0.0] * dims
    for feature, weight in _features(words):
        bucket, sign = _bucket(feature, dims)
        vector[bucket] += sign * weight
    norm = math.sqrt(math.fsum(value * value for value in vector))
    if norm == 0.0:
        # No words (or, with tiny dims, features that cancelled out): a fixed unit vector.
        return [1.0] + [0.0] * (dims - 1)
    return _as_float32([value / norm for value in vector])


def to_base64(vector: Sequence[float]) -> str:
    """Little-endian float32 bytes, base64-encoded: OpenAI's ``encoding_format="base64"``."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors of the same length."""
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norms if norms else 0.0


def _features(words: Sequence[str]) -> Iterator[tuple[str, float]]:
    for word in words:
        yield word, 1.0
    for first, second in itertools.pairwise(words):
        yield f"{first} {second}", BIGRAM_WEIGHT


def _bucket(feature: str, dims: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dims, (1.0 if value >> 63 else -1.0)


def _as_float32(vector: Sequence[float]) -> list[float]:
    return list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))
