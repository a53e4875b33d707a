"""A small kustomize renderer for the tests of `deploy/k8s/` (no kubectl or kustomize here).

It renders exactly the kustomization features the manifests use, in kustomize's order for one
kustomization (patches, then namespace, labels, images), and refuses every other field or
option with a `KustomizeError`, so a manifest never silently relies on something this renderer
ignores:

- `resources`: YAML files (several documents each) and folders holding a kustomization.yaml;
- `namespace`: set on every namespaced object;
- `labels`: `pairs` added to every object's labels, and with `includeTemplates` to the pod
  templates' labels (where they have some); `includeSelectors` is refused (selectors here
  are written out in full);
- `images`: `name` -> `newName` / `newTag` on every container and init container;
- `patches`: `path` or inline `patch`, with an optional `target` (kind and/or name). A patch
  that is a list is a JSON 6902 patch (add, replace, remove), anything else a strategic merge
  patch: maps merge, a null removes the key, lists of named items (containers, env, volumes,
  ...) merge item by item on `name`, and other lists are replaced.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KustomizeError", "Manifest", "object_id", "render"]

Manifest = dict[str, Any]

KNOWN_FIELDS = {"apiVersion", "kind", "namespace", "labels", "images", "resources", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


class KustomizeError(ValueError):
    """The kustomization cannot be rendered (or uses a feature this renderer does not have)."""


def object_id(obj: Manifest) -> str:
    """`Kind/namespace/name`, as the errors and tests name an object."""
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')}"


def render(folder: Path) -> list[Manifest]:
    """The objects `kubectl kustomize FOLDER` would print (in the order of the resources)."""
    path = folder / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{folder}: no kustomization.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - KNOWN_FIELDS
    if unknown:
        raise KustomizeError(f"{path}: fields this renderer does not support: {sorted(unknown)}")
    objects: list[Manifest] = []
    for resource in spec.get("resources", []):
        target = folder / resource
        if target.is_dir():
            objects.extend(render(target))
        elif target.is_file():
            objects.extend(doc for doc in yaml.safe_load_all(target.read_text()) if doc)
        else:
            raise KustomizeError(f"{path}: resource {resource} does not exist")
    _check_unique(objects, path)
    for patch in spec.get("patches", []):
        _apply_patch(objects, patch, folder)
    if "namespace" in spec:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for entry in spec.get("labels", []):
        _apply_labels(objects, entry, path)
    for image in spec.get("images", []):
        _apply_image(objects, image)
    return objects


def _check_unique(objects: list[Manifest], path: Path) -> None:
    seen: set[str] = set()
    for obj in objects:
        if not isinstance(obj, dict) or "kind" not in obj or "metadata" not in obj:
            raise KustomizeError(f"{path}: a resource without kind or metadata: {obj!r:.80}")
        ident = object_id(obj)
        if ident in seen:
            raise KustomizeError(f"{path}: {ident} is defined twice")
        seen.add(ident)


def _apply_labels(objects: list[Manifest], entry: dict[str, Any], path: Path) -> None:
    if entry.get("includeSelectors") or set(entry) - {"pairs", "includeTemplates"}:
        raise KustomizeError(f"{path}: labels support only pairs and includeTemplates")
    pairs = {str(k): str(v) for k, v in entry["pairs"].items()}
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(pairs)
        template = (obj.get("spec") or {}).get("template") or {}
        pod_labels = (template.get("metadata") or {}).get("labels")
        if entry.get("includeTemplates") and isinstance(pod_labels, dict):
            pod_labels.update(pairs)  # as kustomize: only where the template has labels


def _split_image(image: str) -> tuple[str, str]:
    """("registry/name", ":tag" or "@digest" or "")."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _apply_image(objects: list[Manifest], image: dict[str, Any]) -> None:
    if set(image) - {"name", "newName", "newTag"}:
        raise KustomizeError(f"images support only name, newName and newTag: {image}")
    for obj in objects:
        pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, suffix = _split_image(container.get("image", ""))
            if name != image["name"]:
                continue
            if "newTag" in image:
                suffix = f":{image['newTag']}"
            container["image"] = image.get("newName", name) + suffix


def _targets(objects: list[Manifest], target: dict[str, Any]) -> list[Manifest]:
    if set(target) - {"kind", "name"}:
        raise KustomizeError(f"patch targets support only kind and name: {target}")
    return [
        obj
        for obj in objects
        if target.get("kind", obj["kind"]) == obj["kind"]
        and target.get("name", obj["metadata"].get("name")) == obj["metadata"].get("name")
    ]


def _apply_patch(objects: list[Manifest], entry: dict[str, Any], folder: Path) -> None:
    if set(entry) - {"path", "patch", "target"} or ("path" in entry) == ("patch" in entry):
        raise KustomizeError(f"a patch needs exactly one of path or patch (and a target): {entry}")
    text = (folder / entry["path"]).read_text() if "path" in entry else entry["patch"]
    patch = yaml.safe_load(text)
    if isinstance(patch, list):
        if "target" not in entry:
            raise KustomizeError(f"a JSON 6902 patch needs a target: {entry}")
        matched = _targets(objects, entry["target"])
        for obj in matched:
            for operation in patch:
                _json6902(obj, operation)
    else:
        target = entry.get("target") or {"kind": patch["kind"], "name": patch["metadata"]["name"]}
        matched = _targets(objects, target)
        for obj in matched:
            merged = _merge(obj, patch)
            obj.clear()
            obj.update(merged)
    if not matched:
        raise KustomizeError(f"patch {entry} matches no resource")


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge of `patch` into `base` (see the module's docstring for the rules)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if str(key).startswith("$"):
                raise KustomizeError(f"patch directives are not supported: {key}")
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        by_name = {item["name"]: i for i, item in enumerate(base)}
        result = list(base)
        for item in patch:
            if item["name"] in by_name:
                result[by_name[item["name"]]] = _merge(base[by_name[item["name"]]], item)
            else:
                result.append(copy.deepcopy(item))
        return result
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, dict) and "name" in item for item in items)


def _json6902(obj: Manifest, operation: dict[str, Any]) -> None:
    op, path = operation.get("op"), operation.get("path", "")
    if op not in ("add", "replace", "remove"):
        raise KustomizeError(f"JSON 6902 ops supported: add, replace, remove; not {op}")
    keys = [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]
    if not keys:
        raise KustomizeError(f"JSON 6902 path must not be empty: {operation}")
    parent: Any = obj
    for key in keys[:-1]:
        parent = parent[int(key)] if isinstance(parent, list) else parent[key]
    last = keys[-1]
    if isinstance(parent, list):
        if op == "add":
            parent.insert(len(parent) if last == "-" else int(last), operation["value"])
        elif op == "replace":
            parent[int(last)] = operation["value"]
        else:
            del parent[int(last)]
        return
    if op in ("replace", "remove") and last not in parent:
        raise KustomizeError(f"JSON 6902 {op} of a missing path {path} in {object_id(obj)}")
    if op == "remove":
        del parent[last]
    else:
        parent[last] = operation["value"]
