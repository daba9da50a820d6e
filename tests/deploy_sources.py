"""Reads the deployment files for the deploy tests: Dockerfile instructions, the compose
file, systemd units, rendered Kubernetes objects, and every ``whalecast`` command line
and ``WHALECAST_*`` variable they (and docs/deploy.md) use.
"""

from __future__ import annotations

import json
import re
import shlex
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testkit.redis_servers import require_tool
from tests.kustomize_render import pod_specs, render

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
SYSTEMD = DEPLOY / "systemd"
K8S_TARGETS = ["base", "overlays/example", "overlays/sharded"]
GUIDE = ROOT / "docs" / "deploy.md"


@dataclass(frozen=True)
class Invocation:
    source: str
    argv: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.source}: whalecast {' '.join(self.argv)}"


def venv_tool(name: str) -> str:
    """A tool installed by a Python package (the dev extra) next to this interpreter."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.is_file():
        return str(candidate)
    return require_tool(name)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def dockerfile_exec_form(instruction: str) -> list[str]:
    """The JSON (exec-form) argument list of the last such instruction."""
    values = [args for word, args in dockerfile_instructions() if word == instruction]
    if instruction == "HEALTHCHECK":
        return list(json.loads(values[-1].split(" CMD ", 1)[1]))
    return list(json.loads(values[-1]))


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def compose_whalecast_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if str(service.get("image", "")).startswith("whalecast")
    }


def systemd_units() -> list[Path]:
    return sorted(p for p in SYSTEMD.iterdir() if p.suffix in {".service", ".timer"})


def unit_values(unit: Path, key: str) -> list[str]:
    prefix = f"{key}="
    lines = unit.read_text(encoding="utf-8").splitlines()
    return [line[len(prefix) :] for line in lines if line.startswith(prefix)]


def k8s_objects() -> dict[str, list[dict[str, Any]]]:
    return {target: render(DEPLOY / "k8s" / target) for target in K8S_TARGETS}


def _whalecast_containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    containers = [c for spec in pod_specs(objects) for c in spec["containers"]]
    return [c for c in containers if c["image"].rsplit("/", 1)[-1].startswith("whalecast")]


def invocations() -> list[Invocation]:
    """Every whalecast command line the image, compose, systemd, Kubernetes and the guide use."""
    found = [Invocation("Dockerfile CMD", tuple(dockerfile_exec_form("CMD")))]
    for name, service in compose_whalecast_services().items():
        found.append(Invocation(f"compose {name}", tuple(service["command"])))
    for unit in systemd_units():
        for command in unit_values(unit, "ExecStart"):
            argv = shlex.split(command)
            assert argv[0].endswith("/whalecast"), command
            found.append(Invocation(unit.name, tuple(argv[1:])))
    for target, objects in k8s_objects().items():
        for container in _whalecast_containers(objects):
            assert "command" not in container, "the image's entry point is whalecast"
            found.append(Invocation(f"k8s {target} {container['name']}", tuple(container["args"])))
    found += _guide_invocations()
    unique: dict[tuple[str, ...], Invocation] = {}
    for invocation in found:
        unique.setdefault(invocation.argv, invocation)
    return list(unique.values())


def _guide_invocations() -> list[Invocation]:
    if not GUIDE.is_file():
        return []
    found = []
    in_code = False
    pattern = re.compile(r"(?:^|-- |sudo (?:-u \S+ )?)(?:/opt/whalecast/bin/)?whalecast ([a-z].*)$")
    for line in GUIDE.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
            continue
        match = pattern.search(line.strip()) if in_code else None
        if match:
            argv = shlex.split(match.group(1).split(" #", 1)[0])
            found.append(Invocation("docs/deploy.md", tuple(argv)))
    return found


def environment_names() -> dict[str, str | None]:
    """Every WHALECAST_* variable the deployment files set, with its literal value if any."""
    names: dict[str, str | None] = {}
    for word, args in dockerfile_instructions():
        if word == "ENV":
            names.update(re.findall(r"(WHALECAST_\w+)=(\S+)", args))
    for service in compose_whalecast_services().values():
        names.update({k: str(v) for k, v in service.get("environment", {}).items()})
    for unit in systemd_units():
        for value in unit_values(unit, "Environment"):
            name, _, literal = value.partition("=")
            names[name] = literal
    example = (SYSTEMD / "whalecast.env.example").read_text(encoding="utf-8")
    names.update(re.findall(r"^#? ?(WHALECAST_\w+)=(\S*)$", example, re.M))
    for objects in k8s_objects().values():
        for container in _whalecast_containers(objects):
            for env in container.get("env", []):
                names.setdefault(env["name"], env.get("value"))
    return {k: v for k, v in names.items() if k.startswith("WHALECAST_")}
