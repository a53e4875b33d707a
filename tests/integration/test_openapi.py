"""The OpenAPI document the gateway serves: valid OpenAPI 3.1, every route of the app in it and
nothing else, request schemas generated from the Structs the endpoints decode, errors in one
shape, credentials documented as the gateway enforces them; and the /docs page that shows it,
usable offline under `script-src 'self'`."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from openapi_spec_validator import validate
from starlette.applications import Starlette

from libs.common import Settings
from services.gateway.api_types import REF, SearchHit
from services.gateway.app import create_app
from services.gateway.auth import OPEN_PATHS
from services.gateway.http_guard import EXEMPT_PATHS
from services.gateway.ingest_api import BatchIn, DocumentIn, SearchIn
from services.gateway.openapi import app_operations
from services.gateway.runs_api import RunRequest
from services.gateway.session_api import SignIn
from services.gateway.tasks_api import CreateTask
from services.ingestor.vectors import SearchHit as IngestorSearchHit

SECRET = "read-secret-0123456789"
# (path, method) -> the Struct(s) its endpoint decodes the body into
REQUEST_STRUCTS: dict[tuple[str, str], tuple[type[msgspec.Struct], ...]] = {
    ("/api/tasks", "post"): (CreateTask,),
    ("/run-agents", "post"): (RunRequest,),
    ("/api/ingest", "post"): (DocumentIn, BatchIn),
    ("/api/search", "post"): (SearchIn,),
    ("/api/session", "post"): (SignIn,),
}
WRITE_METHODS = {"post", "put", "patch", "delete"}


@pytest.fixture
def app(tmp_path: Path) -> Starlette:
    """The gateway app with a read token (its lifespan is not run: the document needs none)."""
    return create_app(Settings(data_dir=tmp_path, api_tokens=f"docs:read:{SECRET}"))


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    """What `GET /openapi.json` answers without credentials (it is open)."""
    reply = await client.get("/openapi.json")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    body: dict[str, Any] = reply.json()
    return body


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises on the first violation of the OpenAPI 3.1 schema


def test_every_route_of_the_app_is_documented_and_nothing_else(
    app: Starlette, document: dict[str, Any]
) -> None:
    routes = app_operations(app.routes)
    assert ("/api/tasks", "post") in routes
    assert ("/openapi.json", "get") in routes
    assert set(operations(document)) == routes


def test_request_bodies_are_the_schemas_of_the_structs_the_endpoints_decode(
    document: dict[str, Any],
) -> None:
    bodies = {key: op for key, op in operations(document).items() if "requestBody" in op}
    assert set(bodies) == set(REQUEST_STRUCTS)
    schemas = document["components"]["schemas"]
    for key, structs in REQUEST_STRUCTS.items():
        body = bodies[key]["requestBody"]["content"]["application/json"]["schema"]
        refs = [part["$ref"] for part in body.get("anyOf", [body])]
        assert refs == [REF.format(name=s.__name__) for s in structs], key
        generated = msgspec.json.schema_components(structs, ref_template=REF)[1]
        for struct in structs:
            assert schemas[struct.__name__] == generated[struct.__name__], struct


def test_a_struct_constraint_reaches_the_document(document: dict[str, Any]) -> None:
    title = document["components"]["schemas"]["CreateTask"]["properties"]["title"]
    assert (title["minLength"], title["maxLength"]) == (1, 200)
    assert document["components"]["schemas"]["RunRequest"]["required"] == ["id"]


def test_every_error_answer_has_the_one_error_shape(document: dict[str, Any]) -> None:
    error_ref = {"$ref": REF.format(name="ErrorBody")}
    for key, operation in operations(document).items():
        for status, response in operation["responses"].items():
            if int(status) >= 400 and (key, status) != (("/ready", "get"), "503"):
                assert response["content"]["application/json"]["schema"] == error_ref, key
            if status in ("429", "503") and key != ("/ready", "get"):
                assert "Retry-After" in response["headers"], (key, status)
    detail = document["components"]["schemas"]["ErrorDetail"]
    assert sorted(detail["required"]) == ["message", "status"]
    assert detail.get("additionalProperties", True) is not False  # details may follow


def test_credentials_are_documented_as_the_gateway_enforces_them(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert schemes["sessionCookie"] == {"type": "apiKey", "in": "cookie", "name": "ragpoc_session"}
    for (path, method), operation in operations(document).items():
        responses = operation["responses"]
        if path in OPEN_PATHS:
            assert operation["security"] == [], path
        elif path == "/metrics":
            assert {} in operation["security"]  # public unless RAGPOC_METRICS_PUBLIC=0
        else:
            assert operation["security"] == [{"bearerAuth": []}, {"sessionCookie": []}], path
            assert "401" in responses, path
            assert ("403" in responses) == (method in WRITE_METHODS), (path, method)
        if "requestBody" in operation:
            assert {"413", "415", "422"} <= set(responses), path
        # every request but a probe's must name this gateway in its Host header, or get a 400
        assert ("400" in responses) == (path not in EXEMPT_PATHS), path


def test_the_search_hit_matches_what_the_ingestor_answers() -> None:
    assert [f.name for f in dataclasses.fields(IngestorSearchHit)] == list(
        SearchHit.__struct_fields__
    )


async def test_a_protected_operation_refuses_what_the_document_says_it_does(
    client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    """The read token is refused a write with 403, and no token gets 401: both documented."""
    documented = document["paths"]["/api/tasks"]["post"]["responses"]
    refused = await client.post(
        "/api/tasks", json={"title": "t"}, headers={"Authorization": f"Bearer {SECRET}"}
    )
    anonymous = await client.get("/api/jobs")
    assert (refused.status_code, anonymous.status_code) == (403, 401)
    assert {"401", "403"} <= set(documented)


async def test_the_docs_page_works_offline_under_a_strict_content_security_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts
    assert all(not inline.strip() for _, inline in scripts)  # no inline script
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handler
    assert " style=" not in html
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert not [s for s in sources if "//" in s], "everything comes from this gateway"
    for asset in [s for s in sources if s.startswith("/static/docs/")]:
        reply = await client.get(asset)  # open, as the page is
        assert reply.status_code == 200, asset
        assert not re.search(r"https?://", reply.text), asset
    module = (await client.get("/static/docs/docs.js")).text
    assert 'fetch("/openapi.json"' in module
    assert "innerHTML" not in module  # the document is shown as text, never parsed as HTML
