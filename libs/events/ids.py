"""Redis stream entry ids ("<ms>-<seq>") compared as numbers, not strings."""

from __future__ import annotations

__all__ = ["entry_key", "is_after"]


def entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def is_after(entry_id: str, other: str) -> bool:
    return entry_key(entry_id) > entry_key(other)
