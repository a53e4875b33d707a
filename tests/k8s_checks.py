"""Checks of rendered `deploy/k8s/` objects: each returns the problems it found, one line each.

`schema_problems`: every object against the Kubernetes JSON schemas (`kubernetes-validate`,
strict: an unknown field is an error, as with `kubectl apply`'s strict field validation) and
the KEDA objects against the CRD schemas vendored in `deploy/k8s/schemas/`, made strict the
same way. `consistency_problems`: what the schemas cannot see, i.e. that the objects fit each
other and rag-poc itself (settings, service commands and ports, stream and group names, the
gateway's API tokens from a Secret the cluster provides).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from urllib.parse import urlsplit

import kubernetes_validate
from starlette.routing import Route

from libs.common.settings import Settings, SettingsError, load_settings
from services.cli.serve import SERVICES
from services.gateway.tokens import gateway_tokens
from services.ingestor.settings import IngestSettings
from services.mockai.settings import MockaiSettings
from tests.k8s_keda import KEDA_SCHEMA_FILES, keda_problems, keda_validator
from tests.k8s_objects import EXTERNAL_SECRETS, by_kind, container_env, pod_labels, selected
from tests.k8s_render import Manifest, object_id

__all__ = ["KUBERNETES_VERSION", "consistency_problems", "schema_problems"]

# The oldest Kubernetes these manifests are meant for (policy/v1, autoscaling/v2 for KEDA).
KUBERNETES_VERSION = "1.30"
# The services that hold stream entries while they work, and drain them on SIGTERM.
CONSUMERS = ("runner", "ingestor")
KNOWN_VARIABLES = (
    set(Settings.ENVIRONMENT) | set(IngestSettings.ENVIRONMENT) | set(MockaiSettings.ENVIRONMENT)
)


def schema_problems(objects: list[Manifest]) -> list[str]:
    problems = []
    keda = {kind: keda_validator(kind) for kind in KEDA_SCHEMA_FILES}
    for obj in objects:
        ident = object_id(obj)
        if obj.get("kind") in keda:
            for error in keda[obj["kind"]].iter_errors(obj):
                where = "/".join(str(part) for part in error.absolute_path)
                problems.append(f"{ident}: KEDA schema: at /{where}: {error.message}")
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(part) for part in error.absolute_path)
            problems.append(f"{ident}: Kubernetes schema: at /{where}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{ident}: no schema: {error}")
    return problems


def _service_port(service: str, settings: Settings) -> int | None:
    """The port `ragpoc SERVICE` listens on with these settings (None: it listens on none)."""
    ports = {
        "gateway": settings.gateway_port,
        "ingestor": settings.ingestor_port,
        "mockai": settings.mockai_port,
        "runner": settings.runner_metrics_port or None,
        "projector": settings.projector_metrics_port or None,
    }
    return ports.get(service)


@functools.cache
def _get_paths(service: str) -> frozenset[str]:
    """The paths `ragpoc SERVICE` answers GET on (its app's routes; the runner's and the
    projector's Prometheus servers answer every path, and /metrics is the one meant)."""
    if service in ("runner", "projector"):
        return frozenset({"/metrics"})
    if service == "gateway":
        from services.gateway.app import create_app as gateway

        app = gateway(Settings())
    elif service == "ingestor":
        from services.ingestor.app import create_app as ingestor

        app = ingestor(Settings(), IngestSettings())
    elif service == "mockai":
        from services.mockai import create_app as mockai

        app = mockai()
    else:
        return frozenset()
    return frozenset(
        route.path
        for route in app.routes
        if isinstance(route, Route) and "GET" in (route.methods or ())
    )


def _probes(container: Manifest) -> Iterator[tuple[str, Manifest]]:
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if kind in container:
            yield kind, container[kind]


def _container_problems(
    ident: str, container: Manifest, grace_s: float, objects: list[Manifest]
) -> list[str]:
    problems = []
    command = container.get("command", [])
    if len(command) != 2 or command[0] != "ragpoc" or command[1] not in SERVICES:
        return [f"{ident}: command {command} is not `ragpoc <{'|'.join(SERVICES)}>`"]
    service = command[1]
    env, missing = container_env(container, objects)
    problems += [f"{ident}: {text}" for text in missing]
    try:
        settings = load_settings(env)
        IngestSettings.from_env(env)
        MockaiSettings.from_env(env)
    except SettingsError as error:
        return [*problems, f"{ident}: its environment is refused: {error}"]
    if SERVICES[service][1] and not settings.redis_url:
        problems.append(f"{ident}: `ragpoc {service}` needs REDIS_URL")
    if service == "gateway":
        try:
            gateway_tokens(settings)
        except SettingsError as error:
            problems.append(f"{ident}: the gateway would refuse to start: {error}")
    if service in CONSUMERS and grace_s <= settings.consumer_drain_s:
        problems.append(
            f"{ident}: terminationGracePeriodSeconds {grace_s} does not outlast "
            f"RAGPOC_CONSUMER_DRAIN_S {settings.consumer_drain_s}: draining runs get killed"
        )
    declared = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    listens = _service_port(service, settings)
    if sorted(declared.values()) != ([listens] if listens else []):
        problems.append(f"{ident}: declares ports {declared}, but it listens on {listens}")
    for kind in ("livenessProbe", "readinessProbe"):
        if kind not in container:
            problems.append(f"{ident}: no {kind}")
    for kind, probe in _probes(container):
        if "httpGet" in probe or "tcpSocket" in probe:
            action: Manifest = probe.get("httpGet") or probe.get("tcpSocket") or {}
            port = action.get("port")
            if port not in declared and port not in declared.values():
                problems.append(f"{ident}: {kind} port {port} is not a declared port")
            path = action.get("path", "/")
            if "httpGet" in probe and path not in _get_paths(service):
                problems.append(f"{ident}: {kind} path {path} is no GET route of {service}")
        elif "exec" in probe:
            command = probe["exec"]["command"]
            if command[:2] == ["python", "-c"]:
                try:
                    compile(command[2], f"{ident} {kind}", "exec")
                except SyntaxError as error:
                    problems.append(f"{ident}: {kind} is not valid Python: {error}")
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        for what in ("cpu", "memory"):
            if what not in resources.get(part, {}):
                problems.append(f"{ident}: no {part}.{what}")
    return problems


def _deployment_problems(objects: list[Manifest]) -> list[str]:
    problems = []
    deployments = by_kind(objects, "Deployment")
    budgets = by_kind(objects, "PodDisruptionBudget")
    for deployment in deployments:
        ident = object_id(deployment)
        spec = deployment["spec"]
        if not spec["selector"]["matchLabels"].items() <= pod_labels(deployment).items():
            problems.append(f"{ident}: its selector does not select its own pods")
        pod = spec["template"]["spec"]
        grace_s = pod.get("terminationGracePeriodSeconds", 30)
        for container in pod["containers"]:
            name = f"{ident} {container['name']}"
            problems += _container_problems(name, container, grace_s, objects)
        if not any(
            deployment in selected(pdb["spec"]["selector"]["matchLabels"], deployments)
            for pdb in budgets
        ):
            problems.append(f"{ident}: no PodDisruptionBudget selects its pods")
    for pdb in budgets:
        if len(selected(pdb["spec"]["selector"]["matchLabels"], deployments)) != 1:
            problems.append(f"{object_id(pdb)}: does not select exactly one Deployment's pods")
    return problems


def _service_problems(objects: list[Manifest]) -> list[str]:
    problems = []
    deployments = by_kind(objects, "Deployment")
    for service in by_kind(objects, "Service"):
        ident = object_id(service)
        picked = selected(service["spec"].get("selector", {}), deployments)
        if len(picked) != 1:
            names = [d["metadata"]["name"] for d in picked]
            problems.append(
                f"{ident}: its selector matches the pods of {names}, not one Deployment"
            )
            continue
        containers = picked[0]["spec"]["template"]["spec"]["containers"]
        ports = {p.get("name") for c in containers for p in c.get("ports", [])}
        ports |= {p["containerPort"] for c in containers for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            if port.get("targetPort", port["port"]) not in ports:
                problems.append(f"{ident}: targetPort {port.get('targetPort')} is not declared")
    return problems


def _config_problems(objects: list[Manifest]) -> list[str]:
    problems = []
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    for config in by_kind(objects, "ConfigMap"):
        for name, value in config.get("data", {}).items():
            if name not in KNOWN_VARIABLES:
                problems.append(f"{object_id(config)}: {name} is no variable rag-poc reads")
            url = urlsplit(str(value)) if str(value).startswith("http") else None
            if url and url.hostname in services:
                ports = [p["port"] for p in services[url.hostname]["spec"]["ports"]]
                if url.port not in ports:
                    problems.append(f"{object_id(config)}: {name} port {url.port} not in {ports}")
    return problems


def _token_problems(objects: list[Manifest]) -> list[str]:
    """The API tokens stay out of the manifests, and only the gateway reads them."""
    problems = [
        f"{object_id(secret)}: holds what the cluster provides (API tokens): create it there, "
        "never in the manifests"
        for secret in by_kind(objects, "Secret")
        if secret["metadata"]["name"] in EXTERNAL_SECRETS
    ]
    for deployment in by_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if container.get("command", [])[1:] == ["gateway"]:
                continue
            for item in container.get("env", []):
                ref = (item.get("valueFrom") or {}).get("secretKeyRef") or {}
                if ref.get("name") in EXTERNAL_SECRETS:
                    problems.append(
                        f"{object_id(deployment)} {container['name']}: reads the API tokens "
                        f"(Secret {ref['name']}), which only the gateway needs"
                    )
    return problems


def consistency_problems(objects: list[Manifest]) -> list[str]:
    return (
        _deployment_problems(objects)
        + _service_problems(objects)
        + _config_problems(objects)
        + _token_problems(objects)
        + keda_problems(objects)
    )
