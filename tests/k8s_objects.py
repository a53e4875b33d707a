"""Reading rendered Kubernetes objects: by kind, the pods a selector picks, and the environment
a container gets from its ConfigMaps, Secrets and values (for the checks in `tests.k8s_checks`
and `tests.k8s_keda`)."""

from __future__ import annotations

from tests.k8s_render import Manifest

__all__ = ["EXTERNAL_SECRETS", "by_kind", "container_env", "pod_labels", "selected"]

# Secrets the cluster provides and the manifests never hold (a committed token is no secret):
# name -> key -> a stand-in value of the right form, for the checks that read a container's
# environment.
EXTERNAL_SECRETS: dict[str, dict[str, str]] = {
    "ragpoc-api-tokens": {"tokens": "ops:write:stand-in-secret-of-the-cluster"},
}


def by_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj.get("kind") == kind]


def pod_labels(deployment: Manifest) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"].get("labels", {})
    return labels


def selected(selector: dict[str, str], deployments: list[Manifest]) -> list[Manifest]:
    return [d for d in deployments if selector and selector.items() <= pod_labels(d).items()]


def container_env(container: Manifest, objects: list[Manifest]) -> tuple[dict[str, str], list[str]]:
    """The environment the container gets from its ConfigMaps, Secrets and values, and the
    references that do not resolve."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in by_kind(objects, "ConfigMap")}
    secrets = {o["metadata"]["name"]: o.get("stringData", {}) for o in by_kind(objects, "Secret")}
    secrets = EXTERNAL_SECRETS | secrets
    env: dict[str, str] = {}
    missing = []
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef") or {}
        found = (
            maps.get(ref.get("name")) if "configMapRef" in source else secrets.get(ref.get("name"))
        )
        if found is None:
            missing.append(f"envFrom {ref.get('name')} does not exist")
        env.update(found or {})
    for item in container.get("env", []):
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            env[item["name"]] = str(item.get("value", ""))
        elif ref["key"] not in secrets.get(ref["name"], {}):
            missing.append(f"env {item['name']}: no key {ref['key']} in Secret {ref['name']}")
        else:
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env, missing
