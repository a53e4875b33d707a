"""The web UI's input limits equal the API's: every maxlength/minlength/min/max attribute in
index.html and every constant in js/limits.js is checked against the request-body Structs the
gateway decodes with (their msgspec constraints) and its other bounds. Changing either side
alone fails here. No browser or stack needed."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from starlette.requests import Request

from services.gateway import ingest_api, tasks_api
from services.gateway.ingest_api import DocumentIn, SearchIn
from services.gateway.runs_api import RunRequest
from services.gateway.tasks_api import CreateTask

STATIC = Path(__file__).resolve().parents[2] / "services" / "gateway" / "static"
LIMIT_ATTRIBUTES = ("maxlength", "minlength", "min", "max")


def constraint(struct: type[msgspec.Struct], field: str, name: str) -> Any:
    """A msgspec constraint of a Struct field, e.g. ("title", "max_length")."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        if f.name == field:
            return getattr(f.type, name)
    raise AssertionError(f"{struct.__name__} has no field {field!r}")


# (element id, attribute) in index.html -> the API's value
HTML_LIMITS: dict[tuple[str, str], Any] = {
    ("task-title", "maxlength"): constraint(CreateTask, "title", "max_length"),
    ("task-description", "maxlength"): constraint(CreateTask, "description", "max_length"),
    ("agent-query", "maxlength"): constraint(RunRequest, "query", "max_length"),
    ("agent-task", "min"): constraint(RunRequest, "id", "ge"),
    ("ingest-title", "maxlength"): constraint(DocumentIn, "title", "max_length"),
    ("ingest-source", "maxlength"): constraint(DocumentIn, "source", "max_length"),
    ("search-query", "maxlength"): constraint(SearchIn, "query", "max_length"),
}
# inputs the API refuses empty (min_length >= 1) must be `required`
REQUIRED = {
    "task-title": constraint(CreateTask, "title", "min_length"),
    "search-query": constraint(SearchIn, "query", "min_length"),
}

# constants of js/limits.js that must equal an API limit
JS_EQUAL: dict[str, Any] = {
    "TASK_TITLE_MAX": constraint(CreateTask, "title", "max_length"),
    "INGEST_TITLE_MAX": constraint(DocumentIn, "title", "max_length"),
    "INGEST_SOURCE_MAX": constraint(DocumentIn, "source", "max_length"),
    "INGEST_MAX_DOCUMENTS": ingest_api.MAX_BATCH_DOCUMENTS,
}
# constants of js/limits.js that must lie within an API range (low, high), inclusive
JS_WITHIN: dict[str, tuple[float, float]] = {
    "INGEST_WAIT_S": (0, ingest_api.MAX_WAIT_S),
    "SEARCH_K": (constraint(SearchIn, "k", "ge"), constraint(SearchIn, "k", "le")),
}


class _Inputs(HTMLParser):
    """Every element's attributes, by id; and the option values of each <select>."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.options: dict[str, list[str]] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        element_id = attributes.get("id")
        if element_id:
            self.by_id[element_id] = attributes
        if tag == "select":
            self._select = element_id
            self.options[element_id or ""] = []
        elif tag == "option" and self._select is not None:
            self.options[self._select].append(attributes.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def parsed_html() -> _Inputs:
    parser = _Inputs()
    parser.feed((STATIC / "index.html").read_text())
    return parser


def js_constants() -> dict[str, int]:
    text = (STATIC / "js" / "limits.js").read_text()
    found = re.findall(r"^export const (\w+) = ([\d_]+);", text, flags=re.MULTILINE)
    exported = re.findall(r"^export ", text, flags=re.MULTILINE)
    assert len(found) == len(exported), "limits.js exports only `export const NAME = <integer>;`"
    return {name: int(value.replace("_", "")) for name, value in found}


def test_every_limit_attribute_in_the_html_equals_the_api() -> None:
    html = parsed_html()
    found = {
        (element_id, attribute): int(value or "")
        for element_id, attributes in html.by_id.items()
        for attribute, value in attributes.items()
        if attribute in LIMIT_ATTRIBUTES
    }
    assert found == HTML_LIMITS


def test_inputs_the_api_refuses_empty_are_required() -> None:
    html = parsed_html()
    for element_id, min_length in REQUIRED.items():
        assert min_length is not None
        assert min_length >= 1
        assert "required" in html.by_id[element_id], element_id


def test_the_status_filter_offers_the_apis_statuses() -> None:
    options = parsed_html().options["status-filter"]
    assert options == ["", *tasks_api.TASK_STATUSES]


def test_every_constant_in_limits_js_matches_the_api() -> None:
    constants = js_constants()
    assert set(constants) == set(JS_EQUAL) | set(JS_WITHIN) | {"TASK_LIST_SIZE"}
    assert {name: constants[name] for name in JS_EQUAL} == JS_EQUAL
    for name, (low, high) in JS_WITHIN.items():
        assert low <= constants[name] <= high, (name, constants[name], (low, high))


def test_no_other_module_sets_a_length_limit() -> None:
    for path in (STATIC / "js").rglob("*.js"):
        if path.name != "limits.js":
            assert not re.search(r"max[Ll]ength|min[Ll]ength", path.read_text()), path


async def test_the_list_size_the_ui_asks_for_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /api/tasks bounds `limit` in code, not in a Struct: ask the handler itself."""

    async def no_tasks(*_args: object, **_kwargs: object) -> list[object]:
        return []

    monkeypatch.setattr(tasks_api, "list_tasks", no_tasks)
    size = js_constants()["TASK_LIST_SIZE"]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/tasks",
        "query_string": f"limit={size}".encode(),
        "headers": [],
        "state": {"ctx": SimpleNamespace(engine=None)},
    }
    response = await tasks_api.list_all_tasks(Request(scope))
    assert response.status_code == 200
