"""The architecture doc's generated parts match the code, the packages are layered, and nothing
in the repository points at files outside it."""

from __future__ import annotations

import importlib.util
import subprocess
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_architecture_doc_lists_the_events_layout_and_imports_the_code_has() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert gen_docs().regenerate(doc) == doc, "stale: run `make docs`"


def test_every_event_type_is_in_the_architecture_doc() -> None:
    from typing import get_args

    from libs.events import AnyEvent, DocEvent

    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for kind in (*get_args(AnyEvent), *get_args(DocEvent)):
        assert f"`{kind.__struct_config__.tag}`" in doc


def test_libraries_never_import_services_and_packages_import_no_cycle() -> None:
    imports = gen_docs().package_imports()
    for package, imported in imports.items():
        if package.startswith("libs."):
            assert not [name for name in imported if name.startswith("services.")], package
    try:
        list(TopologicalSorter(imports).static_order())
    except CycleError as exc:
        raise AssertionError(f"packages import each other in a cycle: {exc.args[1]}") from None


def test_nothing_in_the_repository_points_at_files_outside_it() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    outside = ("PITFALLS", "DESIGN.md", "STYLE.md", "shared/", "seed-operation-manual")
    found = []
    for name in tracked:
        path = ROOT / name
        if name == "tests/unit/test_docs_match_code.py" or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        found += [f"{name}: {word}" for word in outside if word in text]
    assert found == []


def test_no_python_module_is_over_350_lines() -> None:
    too_long = []
    for top in ("libs", "services", "tests", "bench", "scripts"):
        for path in (ROOT / top).rglob("*.py"):
            lines = len(path.read_text().splitlines())
            if lines > 350:
                too_long.append(f"{path.relative_to(ROOT)}: {lines}")
    assert too_long == []
