"""Renders the subset of kustomize that deploy/k8s uses, for the deploy tests.

No kustomize or kubectl binary is available to the test suite and no Python package
renders a kustomization, so this applies exactly the fields our kustomizations use,
with kustomize's semantics:

- ``resources`` (files and directories holding a kustomization), ``components``;
- ``configMapGenerator`` / ``secretGenerator`` with ``files`` (``key=path`` or
  ``path``), ``literals``, ``type`` and ``behavior`` (create, replace, merge); generated
  names get a content-hash suffix and every reference in pod specs is rewritten;
- ``namespace`` (namespaced objects only), ``images`` (``newName``, ``newTag``);
- ``patches``: strategic merge patches (lists merged by the Kubernetes merge keys used
  here, ``$patch: delete`` of a whole object) and JSON 6902 patches with a ``target``.

Any other field, or a list merge this module does not know, raises
:class:`Unsupported` instead of being silently ignored.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KNOWN_FIELDS = {
    "apiVersion", "kind", "resources", "components", "configMapGenerator",
    "secretGenerator", "namespace", "images", "patches",
}  # fmt: skip
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# strategic-merge keys of the lists our patches may touch (from the Kubernetes API)
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
    "volumeMounts": "mountPath", "ports": "containerPort",
}  # fmt: skip


class Unsupported(Exception):
    """The kustomization uses something this renderer does not implement."""


@dataclass
class Generated:
    name: str
    kind: str
    obj: Obj


@dataclass
class Build:
    objects: list[Obj] = field(default_factory=list)
    generated: dict[tuple[str, str], Generated] = field(default_factory=dict)


def render(directory: Path) -> list[Obj]:
    """The objects ``kustomize build directory`` would print (generated names hashed)."""
    build = _build(directory.resolve(), expect_kind="Kustomization")
    renames = {}
    for (kind, name), gen in build.generated.items():
        hashed = f"{name}-{_content_hash(gen.obj)}"
        gen.obj["metadata"]["name"] = hashed
        renames[(kind, name)] = hashed
    for obj in build.objects:
        _rewrite_references(obj, renames)
    return build.objects


def _load_kustomization(directory: Path) -> Obj:
    path = directory / "kustomization.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    unknown = set(data) - KNOWN_FIELDS
    if unknown:
        raise Unsupported(f"{path}: fields {sorted(unknown)}")
    return data


def _build(directory: Path, expect_kind: str) -> Build:
    kust = _load_kustomization(directory)
    if kust.get("kind", "Kustomization") != expect_kind:
        raise Unsupported(f"{directory}: expected a {expect_kind}")
    build = Build()
    for entry in kust.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            _absorb(build, _build(target, "Kustomization"))
        else:
            text = target.read_text(encoding="utf-8")
            build.objects.extend(d for d in yaml.safe_load_all(text) if d)
    for entry in kust.get("components", []):
        _apply_component(build, (directory / entry).resolve())
    _generate(build, directory, kust)
    _apply_patches(build, directory, kust.get("patches", []))
    _apply_images(build, kust.get("images", []))
    if "namespace" in kust:
        for obj in build.objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kust["namespace"]
    return build


def _absorb(build: Build, other: Build) -> None:
    build.objects.extend(other.objects)
    build.generated.update(other.generated)


def _apply_component(build: Build, directory: Path) -> None:
    # a component is a kustomization applied to everything accumulated so far
    kust = _load_kustomization(directory)
    if kust.get("kind") != "Component":
        raise Unsupported(f"{directory}: expected a Component")
    for entry in kust.get("resources", []):
        text = (directory / entry).read_text(encoding="utf-8")
        build.objects.extend(d for d in yaml.safe_load_all(text) if d)
    _generate(build, directory, kust)
    _apply_patches(build, directory, kust.get("patches", []))
    _apply_images(build, kust.get("images", []))


def _generate(build: Build, directory: Path, kust: Obj) -> None:
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for spec in kust.get(key, []):
            data = _generator_data(directory, spec, secret=kind == "Secret")
            behavior = spec.get("behavior", "create")
            existing = build.generated.get((kind, spec["name"]))
            if behavior == "create":
                if existing is not None:
                    raise Unsupported(f"{kind} {spec['name']} generated twice")
                build.generated[(kind, spec["name"])] = _new_generated(build, kind, spec, data)
            elif existing is None:
                raise Unsupported(f"{kind} {spec['name']}: {behavior} of nothing")
            elif behavior == "replace":
                existing.obj["data"] = data
            elif behavior == "merge":
                existing.obj["data"].update(data)
            else:
                raise Unsupported(f"behavior {behavior}")


def _new_generated(build: Build, kind: str, spec: Obj, data: dict[str, str]) -> Generated:
    obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}, "data": data}
    if kind == "Secret":
        obj["type"] = spec.get("type", "Opaque")
    build.objects.append(obj)
    return Generated(spec["name"], kind, obj)


def _generator_data(directory: Path, spec: Obj, secret: bool) -> dict[str, str]:
    unknown = set(spec) - {"name", "files", "literals", "type", "behavior"}
    if unknown:
        raise Unsupported(f"generator fields {sorted(unknown)}")
    data: dict[str, str] = {}
    for entry in spec.get("files", []):
        key, _, rel = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
        data[key] = (directory / rel).read_text(encoding="utf-8")
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    if secret:
        return {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return data


def _content_hash(obj: Obj) -> str:
    payload = json.dumps({"kind": obj["kind"], "data": obj.get("data", {})}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def _apply_images(build: Build, images: list[Obj]) -> None:
    for image in images:
        for container in _all_containers(build.objects):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                new_name = image.get("newName", name)
                new_tag = image.get("newTag", tag)
                container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def _apply_patches(build: Build, directory: Path, patches: list[Obj]) -> None:
    for entry in patches:
        if set(entry) - {"patch", "path", "target"}:
            raise Unsupported(f"patch fields {sorted(entry)}")
        text = entry["patch"] if "patch" in entry else (directory / entry["path"]).read_text()
        body = yaml.safe_load(text)
        if isinstance(body, list):
            _apply_json6902(build, entry.get("target") or {}, body)
        else:
            _apply_strategic(build, body)


def _matches(obj: Obj, target: Obj) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    checks = {"group": group, "version": version, "kind": obj["kind"],
              "name": obj["metadata"]["name"]}  # fmt: skip
    unknown = set(target) - set(checks)
    if unknown:
        raise Unsupported(f"patch target fields {sorted(unknown)}")
    return all(checks[k] == v for k, v in target.items())


def _apply_json6902(build: Build, target: Obj, ops: list[Obj]) -> None:
    hits = [obj for obj in build.objects if _matches(obj, target)]
    if not hits:
        raise Unsupported(f"patch target {target} matches nothing")
    for obj in hits:
        for op in ops:
            _json_patch_op(obj, op)


def _json_patch_op(obj: Obj, op: Obj) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    parent: Any = obj
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op["op"] == "add":
            parent.insert(index, op["value"])
        elif op["op"] == "replace":
            parent[index] = op["value"]
        elif op["op"] == "remove":
            del parent[index]
        else:
            raise Unsupported(f"json patch op {op['op']}")
        return
    if op["op"] in {"add", "replace"}:
        if op["op"] == "replace" and last not in parent:
            raise Unsupported(f"replace of a missing path {op['path']}")
        parent[last] = op["value"]
    elif op["op"] == "remove":
        del parent[last]
    else:
        raise Unsupported(f"json patch op {op['op']}")


def _apply_strategic(build: Build, patch: Obj) -> None:
    target = {"kind": patch["kind"], "name": patch["metadata"]["name"]}
    hits = [obj for obj in build.objects if _matches(obj, target)]
    if len(hits) != 1:
        raise Unsupported(f"strategic patch for {target} matches {len(hits)} objects")
    if patch.get("$patch") == "delete":
        build.objects.remove(hits[0])
        return
    _merge(hits[0], patch)


def _merge(base: Obj, patch: Obj) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            base[key] = _merge_list(key, base.get(key, []), value)
        else:
            base[key] = copy.deepcopy(value)


def _merge_list(key: str, base: list[Obj], patch: list[Obj]) -> list[Obj]:
    if key not in MERGE_KEYS:
        raise Unsupported(f"strategic merge of list {key!r}")
    merge_key = MERGE_KEYS[key]
    result = [copy.deepcopy(item) for item in base]
    for item in patch:
        match = next((r for r in result if r.get(merge_key) == item.get(merge_key)), None)
        if match is None:
            result.append(copy.deepcopy(item))
        else:
            _merge(match, item)
    return result


def _pod_specs(objects: list[Obj]) -> list[Obj]:
    specs = []
    for obj in objects:
        spec = obj.get("spec", {})
        if obj["kind"] == "CronJob":
            specs.append(spec["jobTemplate"]["spec"]["template"]["spec"])
        elif obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            specs.append(spec["template"]["spec"])
        elif obj["kind"] == "Pod":
            specs.append(spec)
    return specs


def pod_specs(objects: list[Obj]) -> list[Obj]:
    """Every pod spec in the objects (workload templates included)."""
    return _pod_specs(objects)


def _all_containers(objects: list[Obj]) -> list[Obj]:
    return [c for s in _pod_specs(objects) for c in s.get("initContainers", []) + s["containers"]]


def _rewrite_references(obj: Obj, renames: dict[tuple[str, str], str]) -> None:
    for spec in _pod_specs([obj]):
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                _rename(volume["configMap"], "name", "ConfigMap", renames)
            if "secret" in volume:
                _rename(volume["secret"], "secretName", "Secret", renames)
        for container in spec.get("initContainers", []) + spec["containers"]:
            for source in container.get("envFrom", []):
                _rename(source.get("configMapRef", {}), "name", "ConfigMap", renames)
                _rename(source.get("secretRef", {}), "name", "Secret", renames)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                _rename(ref.get("configMapKeyRef", {}), "name", "ConfigMap", renames)
                _rename(ref.get("secretKeyRef", {}), "name", "Secret", renames)


def _rename(holder: Obj, key: str, kind: str, renames: dict[tuple[str, str], str]) -> None:
    if key in holder and (kind, holder[key]) in renames:
        holder[key] = renames[(kind, holder[key])]
