"""Rewrite a Dockerfile's heredoc COPY into a plain COPY of a generated file.

Debian bookworm's podman (4.3, buildah 1.28) predates heredoc support (buildah 1.33), so
`COPY <<'EOF' /dest` ... `EOF` becomes `COPY heredoc-1 /dest` with the body written to
CONTEXT/heredoc-1. Everything else is passed through unchanged.

Usage: flatten_heredocs.py DOCKERFILE CONTEXT  (the new Dockerfile goes to CONTEXT/Dockerfile)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# COPY [--flags] <<[-]['"]WORD['"] DEST
HEREDOC_COPY = re.compile(r"^COPY((?:\s+--\S+)*)\s+<<(-?)(['\"]?)(\w+)\3\s+(\S+)\s*$")


def flatten(lines: list[str], context: Path) -> list[str]:
    """The Dockerfile lines with every heredoc COPY replaced; bodies written into context."""
    out: list[str] = []
    index = 0
    count = 0
    while index < len(lines):
        match = HEREDOC_COPY.match(lines[index])
        if not match:
            out.append(lines[index])
            index += 1
            continue
        flags, strip_tabs, _quote, word, dest = match.groups()
        body: list[str] = []
        index += 1
        while index < len(lines) and lines[index].rstrip("\n") != word:
            line = lines[index]
            body.append(line.lstrip("\t") if strip_tabs else line)
            index += 1
        if index == len(lines):
            sys.exit(f"flatten_heredocs: heredoc {word!r} never ends")
        index += 1  # the terminating WORD line
        count += 1
        name = f"heredoc-{count}"
        (context / name).write_text("".join(body))
        out.append(f"COPY{flags} {name} {dest}\n")
    return out


def main() -> None:
    """Read DOCKERFILE, write CONTEXT/Dockerfile and the heredoc bodies next to it."""
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    dockerfile, context = Path(sys.argv[1]), Path(sys.argv[2])
    lines = dockerfile.read_text().splitlines(keepends=True)
    (context / "Dockerfile").write_text("".join(flatten(lines, context)))


if __name__ == "__main__":
    main()
