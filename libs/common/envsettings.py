"""The settings pattern: a frozen struct read from the environment once at start-up.

A subclass of `EnvSettings` declares its fields (type, default, bounds) and an `ENVIRONMENT`
table (variable -> field, meaning); `from_env()` loads and validates it, failing with a
`SettingsError` that names the variable; `describe()` is its part of `ragpoc --help`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Self

import msgspec

from libs.common.errors import RagpocError

__all__ = ["EnvSettings", "SettingsError"]


class SettingsError(RagpocError, ValueError):
    """A setting in the environment is missing or malformed; the message names the variable."""


class EnvSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every settings struct: `ENVIRONMENT` maps variable -> (field, meaning); the
    field's type, bounds and default are the struct's."""

    ENVIRONMENT: ClassVar[dict[str, tuple[str, str]]] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Build the settings from the environment, failing fast with the variable's name.
        An empty variable counts as unset."""
        env = os.environ if environ is None else environ
        raw = {
            field: value
            for variable, (field, _) in cls.ENVIRONMENT.items()
            if (value := env.get(variable))
        }
        try:
            return msgspec.convert(raw, cls, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as exc:
            match = re.search(r"\$\.(\w+)", str(exc))
            field = match.group(1) if match else ""
            variable = next((v for v, (f, _) in cls.ENVIRONMENT.items() if f == field), "")
            if not variable:  # a rule across fields (__post_init__) names its variables itself
                raise SettingsError(str(exc)) from exc
            raise SettingsError(f"environment variable {variable} is invalid: {exc}") from exc

    @classmethod
    def describe(cls) -> str:
        """One line per variable: its name, meaning and default, for `--help`."""
        defaults = cls()
        lines = []
        for variable, (field, meaning) in cls.ENVIRONMENT.items():
            default = getattr(defaults, field)
            shown = f" [default: {default}]" if default not in ("", None) else ""
            lines.append(f"  {variable:<32} {meaning}{shown}")
        return "\n".join(lines)


def _decode_path(type_: type, value: object) -> object:
    if type_ is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError
