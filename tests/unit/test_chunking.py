"""Chunking: sizes, overlap, sentence boundaries, long sentences and words, empty text."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest

from services.ingestor.chunking import chunk_text, clean_text, split_sentences

SENTENCES = [
    "The sky is blue because of Rayleigh scattering.",
    "Shorter wavelengths scatter more than longer ones!",
    "Is the sunset red for the same reason?",
    "Yes, the light crosses more air at dusk.",
    "Clouds are white because their droplets scatter every colour alike.",
]


def words(text: str) -> list[str]:
    return text.split()


def shared_words(previous: str, chunk: str) -> list[str]:
    """The longest run of words ending `previous` that `chunk` starts with."""
    before, after = words(previous), words(chunk)
    for n in range(min(len(before), len(after)), 0, -1):
        if before[-n:] == after[:n]:
            return after[:n]
    return []


def without_overlap(chunks: list[str]) -> list[str]:
    """The words of the chunks with each chunk's repeated start removed."""
    result = words(chunks[0])
    for previous, chunk in pairwise(chunks):
        result += words(chunk)[len(shared_words(previous, chunk)) :]
    return result


def test_empty_and_blank_text_give_no_chunks() -> None:
    assert chunk_text("", size=100, overlap=10) == []
    assert chunk_text(" \n\t\r\n  ", size=100, overlap=10) == []
    assert chunk_text("\x00\x07", size=100, overlap=10) == []


def test_a_short_text_is_one_chunk_with_whitespace_collapsed() -> None:
    assert chunk_text("  Hello   world.\nHow are\tyou?  ", size=100, overlap=10) == [
        "Hello world. How are you?"
    ]


def test_no_chunk_is_longer_than_the_size() -> None:
    rng = random.Random(7)
    text = " ".join(rng.choice(SENTENCES) for _ in range(200))
    for size in (40, 80, 200, 1000):
        chunks = chunk_text(text, size=size, overlap=size // 5)
        assert chunks
        assert max(len(chunk) for chunk in chunks) <= size


def test_chunks_cover_every_word_in_order() -> None:
    rng = random.Random(11)
    text = "\n\n".join(" ".join(rng.sample(SENTENCES, 3)) for _ in range(30))
    chunks = chunk_text(text, size=150, overlap=40)
    assert without_overlap(chunks) == words(text)


def test_chunks_end_on_sentence_boundaries_when_sentences_fit() -> None:
    text = " ".join(SENTENCES * 4)
    chunks = chunk_text(text, size=160, overlap=0)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.endswith((".", "!", "?")), chunk
        assert chunk[0].isupper(), chunk


def test_consecutive_chunks_share_their_last_whole_sentences() -> None:
    text = " ".join(SENTENCES * 3)
    chunks = chunk_text(text, size=160, overlap=70)
    assert len(chunks) > 2
    for previous, chunk in pairwise(chunks):
        last_sentence = split_sentences(previous)[-1]
        assert len(last_sentence) <= 70  # every sample sentence fits in the overlap
        assert chunk.startswith(last_sentence)


def test_without_overlap_chunks_share_nothing() -> None:
    text = " ".join(SENTENCES * 3)
    chunks = chunk_text(text, size=120, overlap=0)
    assert " ".join(chunks) == text


def test_a_sentence_longer_than_the_size_is_split_between_words_with_overlap() -> None:
    long_sentence = " ".join(f"word{n}" for n in range(60)) + "."
    chunks = chunk_text(long_sentence, size=50, overlap=15)
    assert len(chunks) > 1
    assert all(len(chunk) <= 50 for chunk in chunks)
    for previous, chunk in pairwise(chunks):
        shared = shared_words(previous, chunk)
        assert shared  # the overlap is whole words, at most 15 characters
        assert len(" ".join(shared)) <= 15
    assert without_overlap(chunks) == words(long_sentence)


def test_a_word_longer_than_the_size_is_cut() -> None:
    chunks = chunk_text("x" * 70 + " end.", size=30, overlap=5)
    assert chunks == ["x" * 30, "x" * 30, "x" * 10 + " end."]


def test_paragraphs_stay_apart_inside_a_chunk() -> None:
    text = "First paragraph.\n\n\nSecond paragraph.\r\n\r\nThird."
    assert chunk_text(text, size=200, overlap=0) == [
        "First paragraph.\n\nSecond paragraph.\n\nThird."
    ]


def test_sentences_end_at_terminal_punctuation_and_closing_quotes() -> None:
    assert split_sentences('He said "Stop." Then (quietly.) left! Why? Because') == [
        'He said "Stop."',
        "Then (quietly.)",
        "left!",
        "Why?",
        "Because",
    ]
    assert split_sentences("Version 3.11 is out. Great") == ["Version 3.11 is out.", "Great"]


def test_cleaning_removes_control_characters_and_trims_lines() -> None:
    assert clean_text("\ufeff a\x00b \r\n  c  \n") == "ab\nc"


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1), (10, 11)])
def test_impossible_sizes_are_rejected(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk"):
        chunk_text("Some text.", size=size, overlap=overlap)


def test_cjk_sentences_end_at_full_stops_without_spaces() -> None:
    full_stop, question, exclamation = "\u3002", "\uff1f", "\uff01"
    text = f"天空是蓝色的{full_stop}为什么{question}因为散射{exclamation}"
    assert split_sentences(text) == [
        f"天空是蓝色的{full_stop}",
        f"为什么{question}",
        f"因为散射{exclamation}",
    ]
