"""Loading the settings for one `ragpoc` command, failing with a message that says what to set."""

from __future__ import annotations

import sys

from libs.common import Settings, SettingsError, load_settings

__all__ = ["settings_for"]


def settings_for(command: str, *, needs_redis: bool) -> Settings | None:
    """The settings for `ragpoc COMMAND`, or None after saying on stderr what is wrong with the
    environment (the caller exits with 2)."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"ragpoc {command}: {exc}", file=sys.stderr)
        return None
    if needs_redis and not settings.redis_url:
        print(
            f"ragpoc {command}: REDIS_URL is not set. Point it at the stack's Redis/Valkey "
            "(e.g. redis://127.0.0.1:6379/0; `ragpoc up` starts one and prints its URL).",
            file=sys.stderr,
        )
        return None
    return settings
