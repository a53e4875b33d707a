"""The KEDA objects of the rendered manifests: their vendored CRD schemas (made strict: an
unknown field is an error) and whether the runner's ScaledObject reads what the runners consume.

The runners' group spans one run-command stream per partition, and KEDA's redis-streams scaler
watches one stream (the HPA would take the max over per-partition triggers, not the sum), so the
triggers are Prometheus queries on the gateway's gauges, which sum the group over every stream:
they must name gauges and a `service` label the gateway really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema

from services.gateway.cluster_metrics import ClusterCollector, ClusterSnapshot, StreamSample
from tests.k8s_objects import by_kind
from tests.k8s_render import Manifest, object_id

__all__ = [
    "KEDA_SCHEMA_FILES",
    "RUNNER_GAUGES",
    "gateway_gauges",
    "keda_problems",
    "keda_validator",
    "runner_selector",
]

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


# What each runner trigger must read: the gateway's gauge of the runners' consumer group
# summed over every partition's run-command stream, by the trigger's name.
RUNNER_GAUGES = {"runs-in-hand": "ragpoc_stream_pending", "runs-waiting": "ragpoc_stream_lag"}
_QUERY = re.compile(r"max\((?P<metric>[a-zA-Z_:][\w:]*)\{(?P<labels>[^}]*)\}\)")
_LABEL = re.compile(r'\s*(\w+)\s*=\s*"([^"]*)"\s*')


def runner_selector(query: str) -> tuple[str, dict[str, str]] | None:
    """The metric and label matchers of `max(metric{label="value",...})`, the one form the
    runner triggers use (every gateway reports the same cluster-wide gauge, so max over the
    gateways, never sum); None for any other query."""
    found = _QUERY.fullmatch(query.strip())
    if found is None:
        return None
    pairs = [_LABEL.fullmatch(part) for part in found["labels"].split(",") if part.strip()]
    if not all(pairs):
        return None
    return found["metric"], {m[1]: m[2] for m in pairs if m is not None}


def gateway_gauges() -> dict[str, set[str]]:
    """The cluster gauges the gateway exposes, with the `service` values they carry."""
    sample = StreamSample("runner", 1, 0.0, 0, 0.0, 0, 0, 0, 0)
    collector = ClusterCollector(ClusterSnapshot(streams=[sample]), sse_clients=0)
    return {
        family.name: {s.labels["service"] for s in family.samples if "service" in s.labels}
        for family in collector.collect()
    }


def _trigger_problems(ident: str, trigger: Manifest) -> list[str]:
    """A prometheus trigger that reads a runner gauge the gateway exposes, as max over the
    gateways, with a positive threshold and missing data an error (so the fallback applies)."""
    name = trigger.get("name", "?")
    meta = trigger.get("metadata", {})
    where = f"{ident}: trigger {name}"
    if trigger.get("type") != "prometheus":
        return [f"{where} is {trigger.get('type')!r}, not prometheus on the gateway's gauges"]
    problems = []
    if not urlsplit(meta.get("serverAddress", "")).scheme.startswith("http"):
        problems.append(f"{where}: serverAddress {meta.get('serverAddress')!r} is no http URL")
    try:
        if float(meta.get("threshold", "")) <= 0:
            problems.append(f"{where}: threshold must be above 0")
    except ValueError:
        problems.append(f"{where}: threshold {meta.get('threshold')!r} is not a number")
    if meta.get("ignoreNullValues") != "false":
        problems.append(f"{where}: missing gauges would read as 0 (set ignoreNullValues false)")
    selector = runner_selector(meta.get("query", ""))
    if selector is None:
        return [*problems, f"{where}: query {meta.get('query')!r} is not max(gauge{{...}})"]
    metric, labels = selector
    gauges = gateway_gauges()
    if metric != RUNNER_GAUGES.get(name, metric) or metric not in gauges:
        problems.append(f"{where}: reads {metric}, not {RUNNER_GAUGES.get(name)}")
    if labels != {"service": "runner"} or "runner" not in gauges.get(metric, set()):
        problems.append(f'{where}: selects {labels}, not the runners\' {{service="runner"}}')
    return problems


def keda_problems(objects: list[Manifest]) -> list[str]:
    """The ScaledObject scales the runner Deployment (which leaves its replica count to KEDA)
    with triggers that read what the runners consume, summed over the partitions."""
    problems = []
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
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
        if "fallback" not in obj["spec"]:
            problems.append(f"{ident}: no fallback: runners would scale away without Prometheus")
        triggers = obj["spec"]["triggers"]
        names = {trigger.get("name") for trigger in triggers}
        if names != set(RUNNER_GAUGES):
            problems.append(
                f"{ident}: triggers {sorted(map(str, names))}, not {sorted(RUNNER_GAUGES)}"
            )
        for trigger in triggers:
            problems += _trigger_problems(ident, trigger)
    return problems
