"""The `ragpoc` CLI run as a user runs it: a child process from the checkout, with a data folder
of the test's own and without the variables that would point it at another stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.stackproc import ROOT

__all__ = ["ragpoc"]


def ragpoc(
    *args: str, data_dir: Path, unset: tuple[str, ...] = ("REDIS_URL",), **env: str
) -> subprocess.CompletedProcess[str]:
    """`ragpoc *args` to its end (60 s at most), its output captured as text. Variables whose
    names start with one of `unset` are not inherited (a developer's REDIS_URL would otherwise
    decide where it goes); `env` is added on top."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(unset)}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env=inherited | {"RAGPOC_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
