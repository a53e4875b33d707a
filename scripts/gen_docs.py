"""Regenerate the parts of docs/ARCHITECTURE.md that the code can say by itself.

Each generated part sits between `<!-- generated:NAME -->` and `<!-- end:NAME -->`:

- `events`: every event and command type, from the tagged unions in `libs.events`, with the
  stream it goes to, the fields it adds to its envelope and its docstring;
- `layout`: every package under libs/ and services/, its docstring's first sentence and its
  modules;
- `imports`: which package imports which (the picture's arrows), from the code's imports.

    python scripts/gen_docs.py           # rewrite the generated parts in place
    python scripts/gen_docs.py --check   # exit 1 and say what differs when the doc is stale
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libs.events import Command, DocEvent, LockEvent, RunEvent, TaskEvent  # noqa: E402
from libs.events.envelope import Event  # noqa: E402

DOC = ROOT / "docs" / "ARCHITECTURE.md"
PACKAGE_ROOTS = ("libs", "services")

# (union, where its members go)
EVENT_FAMILIES: list[tuple[Any, str]] = [
    (TaskEvent, "task stream + partition log"),
    (RunEvent, "task stream + partition log"),
    (LockEvent, "task stream + partition log"),
    (DocEvent, "docs stream"),
    (Command, "command stream"),
]
_DOC_ENVELOPE = {"doc_id", "batch_id", "at", "v"}


def _members(union: Any) -> tuple[type[msgspec.Struct], ...]:
    return get_args(union) or (union,)


def _sentence(text: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    if not text:
        return ""
    return " ".join(text.strip().split("\n\n")[0].split())


def event_catalog() -> str:
    envelope = {field.name for field in msgspec.structs.fields(Event)}
    rows = [
        "| type | goes to | fields beyond the envelope | meaning |",
        "|---|---|---|---|",
    ]
    for union, where in EVENT_FAMILIES:
        for kind in _members(union):
            own = envelope if issubclass(kind, Event) else _DOC_ENVELOPE
            fields = [f.name for f in msgspec.structs.fields(kind) if f.name not in own]
            if where == "command stream":
                fields = [f.name for f in msgspec.structs.fields(kind) if f.name != "v"]
            tag = kind.__struct_config__.tag
            meaning = _sentence(kind.__doc__).replace("|", "\\|")
            shown = ", ".join(f"`{name}`" for name in fields) or "-"
            rows.append(f"| `{tag}` | {where} | {shown} | {meaning} |")
    return "\n".join(rows)


def _packages() -> Iterator[Path]:
    for top in PACKAGE_ROOTS:
        for init in sorted((ROOT / top).glob("*/__init__.py")):
            yield init.parent


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def layout_table() -> str:
    rows = ["| package | job | modules |", "|---|---|---|"]
    for package in _packages():
        modules = sorted(
            p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")
        )
        job = _sentence(_docstring(package / "__init__.py")).replace("|", "\\|")
        rel = package.relative_to(ROOT).as_posix()
        rows.append(f"| `{rel}/` | {job} | {', '.join(modules)} |")
    return "\n".join(rows)


def package_imports() -> dict[str, set[str]]:
    """package (e.g. `libs.events`) -> the other packages its modules import."""
    names = {p.relative_to(ROOT).as_posix().replace("/", ".") for p in _packages()}
    found: dict[str, set[str]] = {name: set() for name in names}
    for package in _packages():
        own = package.relative_to(ROOT).as_posix().replace("/", ".")
        for module in package.rglob("*.py"):
            for node in ast.walk(ast.parse(module.read_text())):
                targets: list[str] = []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    targets = [node.module]
                elif isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                for target in targets:
                    parts = target.split(".")
                    imported = ".".join(parts[:2])
                    if imported in names and imported != own:
                        found[own].add(imported)
    return found


def import_table() -> str:
    rows = ["| package | imports |", "|---|---|"]
    for package, imported in sorted(package_imports().items()):
        shown = ", ".join(f"`{name}`" for name in sorted(imported)) or "-"
        rows.append(f"| `{package}` | {shown} |")
    return "\n".join(rows)


SECTIONS: dict[str, Callable[[], str]] = {
    "events": event_catalog,
    "layout": layout_table,
    "imports": import_table,
}


def regenerate(text: str) -> str:
    for name, build in SECTIONS.items():
        pattern = re.compile(
            rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- end:{name} -->)", flags=re.DOTALL
        )
        if not pattern.search(text):
            raise SystemExit(f"docs/ARCHITECTURE.md has no <!-- generated:{name} --> part")
        text = pattern.sub(rf"\g<1>{_escaped(build())}\n\g<2>", text)
    return text


def _escaped(body: str) -> str:
    """`body` as a literal in a replacement template."""
    return body.replace("\\", "\\\\")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether the doc is stale")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    fresh = regenerate(current)
    if args.check:
        if fresh != current:
            print(
                "docs/ARCHITECTURE.md is stale: run `python scripts/gen_docs.py` (make docs)",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
