"""Passwords out of what is printed: connection URLs (`redis://:secret@host`,
`postgresql://user:secret@host/db`) keep their shape with the password replaced by `***`, in
messages, log fields and exception text alike."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

__all__ = ["redact", "redact_log_fields", "redact_url"]

MASK = "***"
# scheme://[user]:password@ : the password runs to the last '@' before the host; it may not
# contain '/', whitespace or quotes (a URL's userinfo is percent-encoded, so a real one does not)
_USERINFO_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s'\"]*:)[^/\s'\"]*@")


def redact(text: str) -> str:
    """`text` with the password of every URL in it masked."""
    if "://" not in text:
        return text
    return _USERINFO_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)


def redact_url(url: str) -> str:
    """A connection URL fit to print: its password, if any, masked."""
    return redact(url)


def redact_log_fields(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: masks URL passwords in every string field (the message, bound
    values, a formatted exception), so no log line carries one whatever code logged it."""
    for key, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[key] = redact(value)
    return event_dict
