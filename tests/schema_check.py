"""Validate a file against one of the JSON schemas check-jsonschema ships (compose-spec,
GitHub workflows, ...), as its command line does: the tests of the deploy files use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["check_builtin_schema"]


def check_builtin_schema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    """`check-jsonschema --builtin-schema SCHEMA PATH`; exit 0 when PATH follows it."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
