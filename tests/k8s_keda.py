"""The KEDA objects of the rendered manifests: their vendored CRD schemas (made strict: an
unknown field is an error) and whether the runner's ScaledObject reads the right stream, group
and Redis (the ones rag-poc's settings give) through a TriggerAuthentication that resolves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema

from libs.common.settings import Settings, SettingsError, load_settings
from libs.events.names import RUNNERS_GROUP, Keys
from tests.k8s_objects import by_kind, container_env
from tests.k8s_render import Manifest, object_id

__all__ = ["KEDA_SCHEMA_FILES", "keda_problems", "keda_validator"]

SCHEMAS = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "schemas"
KEDA_SCHEMA_FILES = {
    "ScaledObject": "keda-scaledobject-v1alpha1.json",
    "TriggerAuthentication": "keda-triggerauthentication-v1alpha1.json",
}


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused (the API server prunes or rejects them)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def keda_validator(kind: str) -> jsonschema.protocols.Validator:
    """A validator of KIND (ScaledObject, TriggerAuthentication) from the vendored CRD."""
    crd = json.loads((SCHEMAS / KEDA_SCHEMA_FILES[kind]).read_text())
    schema = _strict(crd["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"const": f"{crd['group']}/{crd['version']}"}
    schema["properties"]["metadata"] = {"type": "object", "required": ["name"]}
    return jsonschema.Draft7Validator(schema)


def _trigger_problems(
    ident: str,
    trigger: Manifest,
    settings: Settings,
    auths: dict[str, Manifest],
    objects: list[Manifest],
) -> list[str]:
    """A redis-streams trigger on the runners' stream and group, in the database and with the
    address and password of REDIS_URL (through its TriggerAuthentication)."""
    problems = []
    redis_url = urlsplit(settings.redis_url)
    meta = trigger.get("metadata", {})
    expected = {
        "stream": Keys(settings.namespace, settings.partitions).run_commands,
        "consumerGroup": RUNNERS_GROUP,
        "databaseIndex": (redis_url.path or "/0").strip("/") or "0",
    }
    for key, value in expected.items():
        if meta.get(key) != value:
            problems.append(f"{ident}: trigger {key} is {meta.get(key)!r}, not {value!r}")
    if trigger["type"] != "redis-streams" or not {"pendingEntriesCount", "lagCount"} & set(meta):
        problems.append(f"{ident}: a trigger is not redis-streams on pending entries or lag")
    auth = auths.get(trigger.get("authenticationRef", {}).get("name"))
    if auth is None:
        return [*problems, f"{ident}: its authenticationRef names no TriggerAuthentication"]
    secrets = {o["metadata"]["name"]: o.get("stringData", {}) for o in by_kind(objects, "Secret")}
    params = {
        ref["parameter"]: secrets.get(ref["name"], {}).get(ref["key"])
        for ref in auth["spec"].get("secretTargetRef", [])
    }
    address = f"{redis_url.hostname}:{redis_url.port or 6379}"
    if (params.get("address"), params.get("password")) != (address, redis_url.password):
        problems.append(f"{object_id(auth)}: address/password differ from REDIS_URL's")
    return problems


def keda_problems(objects: list[Manifest]) -> list[str]:
    """The ScaledObject scales the runner Deployment (which leaves its replica count to KEDA)
    with triggers that read what the runners consume."""
    problems = []
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    auths = {a["metadata"]["name"]: a for a in by_kind(objects, "TriggerAuthentication")}
    scaled = by_kind(objects, "ScaledObject")
    if not scaled:
        problems.append("no ScaledObject: the runners are not autoscaled")
    for obj in scaled:
        ident = object_id(obj)
        target = obj["spec"]["scaleTargetRef"]
        runner = deployments.get(target["name"])
        pod = runner["spec"]["template"]["spec"] if runner else {"containers": []}
        (container, *_) = pod["containers"] or [{}]
        is_runner = container.get("command") == ["ragpoc", "runner"]
        if target.get("kind", "Deployment") != "Deployment" or not is_runner:
            problems.append(f"{ident}: targets {target}, not the runner Deployment")
            continue
        if runner and "replicas" in runner["spec"]:
            problems.append(f"{ident}: the runner Deployment sets replicas, which fight KEDA's")
        try:
            settings = load_settings(container_env(container, objects)[0])
        except SettingsError:
            continue  # the runner's container check reports it
        for trigger in obj["spec"]["triggers"]:
            problems += _trigger_problems(ident, trigger, settings, auths, objects)
    return problems
