"""The command side's errors, under one root. The gateway turns them into HTTP answers."""

from __future__ import annotations

from libs.common.errors import RagpocError

__all__ = ["CommandSideError", "InvalidIdempotencyKey", "UnsettledIdempotencyKey"]


class CommandSideError(RagpocError):
    """Root of the command side's errors (claims, locks, idempotency keys)."""


class InvalidIdempotencyKey(CommandSideError):
    """The Idempotency-Key header is malformed (the client must send another)."""


class UnsettledIdempotencyKey(CommandSideError):
    """The key's record kept changing while it was read (the client may retry)."""
