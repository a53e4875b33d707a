"""The Kubernetes manifests in `deploy/k8s/`: the base and the example overlay render (with the
small kustomize renderer in `tests.k8s_render`), every object passes the Kubernetes and KEDA
schemas, and the objects fit each other and rag-poc (`tests.k8s_checks`). Each check is also
shown to catch a broken manifest, and the projector's exec probe is run for real
(`test_k8s_keda.py` evaluates the runner's KEDA queries over a real Valkey)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.k8s_checks import consistency_problems, schema_problems
from tests.k8s_render import KustomizeError, Manifest, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VARIANTS = {
    "base": ("rag-poc", "rag-poc:0.1.0"),
    "overlays/example": ("rag-poc-example", "registry.example.com/rag-poc:0.1.0"),
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    return {variant: render(K8S / variant) for variant in VARIANTS}


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def containers(objects: list[Manifest]) -> list[Manifest]:
    return [
        c
        for o in objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_renders_every_service_in_its_namespace_from_one_image(
    rendered: dict[str, list[Manifest]], variant: str
) -> None:
    objects = rendered[variant]
    namespace, image = VARIANTS[variant]
    assert {o["metadata"].get("namespace") for o in objects} == {namespace}
    commands = sorted(c["command"][1] for c in containers(objects))
    assert commands == ["gateway", "ingestor", "mockai", "projector", "runner"]
    assert {c["image"] for c in containers(objects)} == {image}
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "rag-poc", obj
        if obj["kind"] == "Deployment":
            pod_labels = obj["spec"]["template"]["metadata"]["labels"]
            assert pod_labels["app.kubernetes.io/part-of"] == "rag-poc"
    kinds = {o["kind"] for o in objects}
    assert {"ConfigMap", "Secret", "Service", "PodDisruptionBudget", "ScaledObject"} <= kinds


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_passes_the_kubernetes_and_keda_schemas(
    rendered: dict[str, list[Manifest]], variant: str
) -> None:
    problems = schema_problems(rendered[variant])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_objects_fit_each_other_and_the_services(
    rendered: dict[str, list[Manifest]], variant: str
) -> None:
    problems = consistency_problems(rendered[variant])
    assert not problems, "\n".join(problems)


def test_the_overlay_patches_the_base(rendered: dict[str, list[Manifest]]) -> None:
    base, example = rendered["base"], rendered["overlays/example"]
    assert find(example, "Deployment", "gateway")["spec"]["replicas"] == 3
    assert find(example, "ScaledObject", "runner")["spec"]["maxReplicaCount"] == 20
    config = find(example, "ConfigMap", "ragpoc-config")["data"]
    base_config = find(base, "ConfigMap", "ragpoc-config")["data"]
    assert config == {**base_config, "RAGPOC_LOG_LEVEL": "warning"}
    (runner,) = find(example, "Deployment", "runner")["spec"]["template"]["spec"]["containers"]
    assert runner["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert runner["command"] == ["ragpoc", "runner"]  # merged by name, not replaced
    secret = find(example, "Secret", "ragpoc-secrets")["stringData"]
    assert secret["REDIS_URL"].startswith("redis://:example-redis-password@")
    assert secret["OPENAI_API_KEY"] == "mock-key"  # kept from the base


def gateway_env(objects: list[Manifest]) -> list[Manifest]:
    (gateway,) = find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
    env: list[Manifest] = gateway["env"]
    return env


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_gateway_reads_its_api_tokens_from_a_secret_the_cluster_provides(
    rendered: dict[str, list[Manifest]], variant: str
) -> None:
    objects = rendered[variant]
    (tokens,) = [item for item in gateway_env(objects) if item["name"] == "RAGPOC_API_TOKENS"]
    reference = tokens["valueFrom"]["secretKeyRef"]
    assert reference == {"name": "ragpoc-api-tokens", "key": "tokens"}  # not optional
    secrets = [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"]
    assert "ragpoc-api-tokens" not in secrets  # no token is committed
    readme = (K8S / "README.md").read_text()
    assert "create secret generic ragpoc-api-tokens" in readme
    assert "--from-literal=tokens=" in readme


def _drop_gateway_tokens(objects: list[Manifest]) -> None:
    env = gateway_env(objects)
    env[:] = [item for item in env if item["name"] != "RAGPOC_API_TOKENS"]


def _commit_a_token(objects: list[Manifest]) -> None:
    secret = copy.deepcopy(find(objects, "Secret", "ragpoc-secrets"))
    secret["metadata"]["name"] = "ragpoc-api-tokens"
    secret["stringData"] = {"tokens": "ops:write:committed-to-the-repository"}
    objects.append(secret)


def _runner_reads_the_tokens(objects: list[Manifest]) -> None:
    (runner,) = find(objects, "Deployment", "runner")["spec"]["template"]["spec"]["containers"]
    reference = {"secretKeyRef": {"name": "ragpoc-api-tokens", "key": "tokens"}}
    runner.setdefault("env", []).append({"name": "RAGPOC_API_TOKENS", "valueFrom": reference})


def _set(target: str, keys: str, value: Any) -> Callable[[list[Manifest]], None]:
    """A mutation: in the object KIND/NAME, set the field at the space-separated `keys` (list
    items by index; None removes the field)."""
    kind, name = target.split("/")
    *parents, last = keys.split()

    def mutate(objects: list[Manifest]) -> None:
        node: Any = find(objects, kind, name)
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is None:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


POD = "spec template spec"
RUNNER = f"{POD} containers 0"
BREAKAGES = {
    "typo in a field": (
        _set("Deployment/runner", f"{RUNNER} imagePullPolcy", "Always"),
        "Kubernetes schema",
    ),
    "wrong type": (_set("Deployment/gateway", "spec replicas", "two"), "Kubernetes schema"),
    "KEDA metadata not a string": (
        _set("ScaledObject/runner", "spec triggers 0 metadata threshold", 24),
        "KEDA schema",
    ),
    "unknown KEDA field": (_set("ScaledObject/runner", "spec minReplicas", 1), "KEDA schema"),
    "Service selects no pods": (
        _set("Service/gateway", "spec selector app.kubernetes.io/component", "gatway"),
        "not one Deployment",
    ),
    "probe on an undeclared port": (
        _set("Deployment/runner", f"{RUNNER} ports 0 name", "prom"),
        "is not a declared port",
    ),
    "probe on a path the service lacks": (
        _set("Deployment/ingestor", f"{RUNNER} readinessProbe httpGet path", "/ready"),
        "path /ready is no GET route of ingestor",
    ),
    "declared port is not the one it listens on": (
        _set("ConfigMap/ragpoc-config", "data GATEWAY_PORT", "8080"),
        "but it listens on 8080",
    ),
    "unknown variable": (
        _set("ConfigMap/ragpoc-config", "data RAGPOC_PARTITION", "8"),
        "is no variable rag-poc reads",
    ),
    "invalid setting": (
        _set("ConfigMap/ragpoc-config", "data RAGPOC_LOCK_TTL_MS", "90000"),
        "its environment is refused",
    ),
    "trigger on a gauge nobody serves": (
        _set(
            "ScaledObject/runner",
            "spec triggers 1 metadata query",
            'max(ragpoc_stream_lagg{service="runner"})',
        ),
        "reads ragpoc_stream_lagg",
    ),
    "trigger on the ingestors' gauge": (
        _set(
            "ScaledObject/runner",
            "spec triggers 1 metadata query",
            'max(ragpoc_stream_lag{service="ingestor"})',
        ),
        "not the runners'",
    ),
    "gauge summed over the gateways": (
        _set(
            "ScaledObject/runner",
            "spec triggers 0 metadata query",
            'sum(ragpoc_stream_pending{service="runner"})',
        ),
        "is not max(gauge",
    ),
    "one partition's stream only": (
        _set("ScaledObject/runner", "spec triggers 1 type", "redis-streams"),
        "not prometheus",
    ),
    "missing gauges read as zero": (
        _set("ScaledObject/runner", "spec triggers 0 metadata ignoreNullValues", "true"),
        "ignoreNullValues false",
    ),
    "no fallback": (_set("ScaledObject/runner", "spec fallback", None), "no fallback"),
    "scales another Deployment": (
        _set("ScaledObject/runner", "spec scaleTargetRef name", "gateway"),
        "not the runner Deployment",
    ),
    "runner with fixed replicas": (
        _set("Deployment/runner", "spec replicas", 2),
        "fight KEDA's",
    ),
    "missing secret key": (
        _set("Secret/ragpoc-secrets", "stringData DATABASE_URL", None),
        "no key DATABASE_URL",
    ),
    "drain longer than the grace period": (
        _set("Deployment/runner", f"{POD} terminationGracePeriodSeconds", 20),
        "does not outlast",
    ),
    "no liveness probe": (
        _set("Deployment/runner", f"{RUNNER} livenessProbe", None),
        "no livenessProbe",
    ),
    "exec probe not Python": (
        _set("Deployment/projector", f"{RUNNER} readinessProbe exec command 2", "import ("),
        "is not valid Python",
    ),
    "no limits": (_set("Deployment/runner", f"{RUNNER} resources limits", None), "no limits.cpu"),
    "gateway on 0.0.0.0 without API tokens": (
        _drop_gateway_tokens,
        "the gateway would refuse to start",
    ),
    "API tokens committed in a manifest": (_commit_a_token, "never in the manifests"),
    "runner given the API tokens": (_runner_reads_the_tokens, "which only the gateway needs"),
    "PDB selects nothing": (
        _set("PodDisruptionBudget/mockai", "spec selector matchLabels app.kubernetes.io/name", "x"),
        "no PodDisruptionBudget selects its pods",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_manifest_is_reported(rendered: dict[str, list[Manifest]], breakage: str) -> None:
    mutate, expected = BREAKAGES[breakage]
    objects = copy.deepcopy(rendered["base"])
    mutate(objects)
    problems = schema_problems(objects) + consistency_problems(objects)
    assert any(expected in problem for problem in problems), problems


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("commonLabels: {a: b}\nresources: []\n")
    with pytest.raises(KustomizeError, match="commonLabels"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(KustomizeError, match="does not exist"):
        render(tmp_path)
    (tmp_path / "patch.yaml").write_text("kind: Deployment\nmetadata: {name: nobody}\n")
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{K8S / 'base'}]\npatches: [{{path: patch.yaml}}]\n"
    )
    with pytest.raises(KustomizeError, match="matches no resource"):
        render(tmp_path)


def _probe(objects: list[Manifest], kind: str) -> list[str]:
    deployment = find(objects, "Deployment", "projector")
    command: list[str] = deployment["spec"]["template"]["spec"]["containers"][0][kind]["exec"][
        "command"
    ]
    return command


def _run(command: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **environ}
    argv = [sys.executable, *command[1:]] if command[0] == "python" else command
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_the_projector_readiness_probe_checks_redis_and_the_database(
    rendered: dict[str, list[Manifest]], redis_url: str, tmp_path: Path
) -> None:
    command = _probe(rendered["base"], "readinessProbe")
    database = f"sqlite:///{tmp_path / 'ragpoc.db'}"
    ready = _run(command, {"REDIS_URL": redis_url, "DATABASE_URL": database})
    assert ready.returncode == 0, ready.stderr
    closed = f"redis://127.0.0.1:{free_port()}/0"
    no_redis = _run(command, {"REDIS_URL": closed, "DATABASE_URL": database})
    assert no_redis.returncode != 0
    assert "ConnectionError" in no_redis.stderr
    no_folder = f"sqlite:///{tmp_path / 'missing' / 'ragpoc.db'}"
    no_database = _run(command, {"REDIS_URL": redis_url, "DATABASE_URL": no_folder})
    assert no_database.returncode != 0
    assert "OperationalError" in no_database.stderr


def test_the_projector_liveness_probe_asks_its_metrics_server(
    rendered: dict[str, list[Manifest]],
) -> None:
    projector = next(
        o
        for o in rendered["base"]
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "projector"
    )
    container = projector["spec"]["template"]["spec"]["containers"][0]
    probe = container["livenessProbe"]
    assert probe["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9102} in container["ports"]
