"""The web UI's static files, read from disk: a page that works under a Content-Security-Policy
without 'unsafe-inline' (no inline script, style or event handler), small ES modules that all
resolve, and no second copy of the server's Activity summaries. No browser or stack needed."""

from __future__ import annotations

import ast
import inspect
import re
from html.parser import HTMLParser
from pathlib import Path

from libs.readmodels import projection

STATIC = Path(__file__).resolve().parents[2] / "services" / "gateway" / "static"
JS = STATIC / "js"
MAX_MODULE_LINES = 250


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"inline handler {name} on <{tag}>")
            if name == "style":
                self.problems.append(f"inline style on <{tag}>")
            if name in ("href", "src") and value:
                if value.strip().lower().startswith("javascript:"):
                    self.problems.append(f"javascript: URL on <{tag}>")
                self.urls.append(value)
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline <script> code")


def modules() -> list[Path]:
    return sorted(JS.rglob("*.js"))


def imports_of(path: Path) -> list[Path]:
    text = path.read_text()
    return [
        (path.parent / spec).resolve()
        for spec in re.findall(r"""^\s*import\b[^;]*?from\s+["'](\.{1,2}/[^"']+)["']""", text, re.M)
    ]


def test_the_page_has_no_inline_script_style_or_handler() -> None:
    page = _Page()
    page.feed((STATIC / "index.html").read_text())
    assert page.problems == []
    assert page.scripts == [{"type": "module", "src": "/static/js/main.js"}]


def test_every_static_url_of_the_page_exists() -> None:
    page = _Page()
    page.feed((STATIC / "index.html").read_text())
    local = [url for url in page.urls if url.startswith("/static/")]
    assert local, page.urls
    for url in local:
        assert (STATIC / url.removeprefix("/static/")).is_file(), url


def test_scripts_build_no_markup_or_code_from_strings() -> None:
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"setAttribute\(\s*[\"'](on|style)|setTimeout\(\s*[\"'`]|setInterval\(\s*[\"'`]"
    )
    for path in modules():
        found = forbidden.search(path.read_text())
        assert found is None, f"{path.relative_to(STATIC)}: {found.group(0) if found else ''}"


def test_modules_are_small_and_every_import_resolves() -> None:
    reached: set[Path] = set()
    todo = [(JS / "main.js").resolve()]
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        assert module.is_file(), module
        reached.add(module)
        todo.extend(imports_of(module))
    assert reached == {path.resolve() for path in modules()}, "modules main.js never loads"
    for path in modules():
        lines = len(path.read_text().splitlines())
        assert lines < MAX_MODULE_LINES, f"{path.relative_to(STATIC)} has {lines} lines"


def _summary_fragments() -> set[str]:
    """The literal phrases (several words) of the server's one-line summaries (`summarize`)."""
    tree = ast.parse(inspect.getsource(projection.summarize))
    fragments = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.strip(" :")
            if " " in text and len(text) >= 8 and not node.value.startswith("One line"):
                fragments.add(text)
    return fragments


def test_the_scripts_do_not_write_activity_summaries_themselves() -> None:
    fragments = _summary_fragments()
    assert len(fragments) >= 5, fragments  # the extraction still finds the summaries
    for path in modules():
        text = path.read_text()
        copied = sorted(f for f in fragments if f in text)
        assert not copied, f"{path.relative_to(STATIC)} repeats server summaries: {copied}"
