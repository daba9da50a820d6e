"""The compose stack for the deploy tests: deploy/compose/docker-compose.yml plus the
test-only override (tests/compose/override.yml) under podman-compose, as one project
with its own name, and everything that project leaves in podman.
"""

from __future__ import annotations

import json
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from tests.container_helpers import ROOT, podman, podman_env

COMPOSE_FILE = ROOT / "deploy" / "compose" / "docker-compose.yml"
OVERRIDE = ROOT / "tests" / "compose" / "override.yml"
PROJECT_LABEL = "io.podman.compose.project"
# the container port each service publishes in the compose file
PORTS = {"redis": 6379, "whalecast": 9108, "prometheus": 9090}


def podman_compose() -> str:
    """podman-compose from the dev extra, next to this interpreter."""
    return str(Path(sysconfig.get_path("scripts")) / "podman-compose")


@dataclass
class Stack:
    """One compose project. ``variables`` fill the override's ``${WCTEST_*}``; the third
    file publishes each service's port on 127.0.0.1 at ``ports`` (service: host port) and
    mounts ``config`` where the services read their config."""

    project: str
    variables: dict[str, str]
    ports: dict[str, int]
    config: Path
    directory: Path

    def local_file(self) -> Path:
        mounts = {
            "whalecast": ["models:/var/lib/whalecast/models"],
            "trainer-volume": ["models:/var/lib/whalecast/models",
                               "history:/var/lib/whalecast/history"],
        }  # fmt: skip
        lines = ["services:"]
        for service in sorted(self.ports.keys() | mounts.keys()):
            lines.append(f"  {service}:")
            if service in self.ports:
                port = f"127.0.0.1:{self.ports[service]}:{PORTS[service]}"
                lines += ["    ports: !override", f'      - "{port}"']
            if service in mounts:
                volumes = [f"{self.config}:/etc/whalecast/config.yml:ro", *mounts[service]]
                lines += ["    volumes: !override", *(f'      - "{v}"' for v in volumes)]
        path = self.directory / "local.yml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def compose(self, *args: str, timeout: float = 600.0) -> str:
        files = [COMPOSE_FILE, OVERRIDE, self.local_file()]
        argv = [podman_compose(), "--project-name", self.project,
                *(part for f in files for part in ("--file", str(f))), *args]  # fmt: skip
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout,
            env={**podman_env(), **self.variables}, cwd=ROOT,
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(
                f"podman-compose {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def containers(self) -> dict[str, dict[str, object]]:
        """The project's containers by service name (running or not)."""
        label = f"label={PROJECT_LABEL}={self.project}"
        found = json.loads(podman("ps", "--all", "--filter", label, "--format", "json"))
        return {c["Labels"]["com.docker.compose.service"]: c for c in found}

    def state(self, service: str) -> tuple[str, int]:
        """(status, exit code) of the service's container."""
        name = str(self.containers()[service]["Names"][0])
        out = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name)
        status, code = out.split()
        return status, int(code)

    def logs(self, service: str) -> str:
        name = str(self.containers()[service]["Names"][0])
        result = subprocess.run(
            ["podman", "logs", name], capture_output=True, text=True, timeout=60,
            env=podman_env(),
        )  # fmt: skip
        return (result.stdout + result.stderr)[-4000:]

    def leftovers(self) -> dict[str, list[str]]:
        """What podman still holds of the project: containers, pods, volumes, networks."""
        label = f"label={PROJECT_LABEL}={self.project}"
        pods = [
            p["Name"]
            for p in json.loads(podman("pod", "ps", "--format", "json") or "[]")
            if self.project in p["Name"]
        ]
        networks = [
            n["name"]
            for n in json.loads(podman("network", "ls", "--format", "json") or "[]")
            if n["name"].startswith(self.project)
        ]
        return {
            "containers": podman(
                "ps", "--all", "--filter", label, "--format", "{{.Names}}"
            ).split(),
            "volumes": podman("volume", "ls", "--filter", label, "--format", "{{.Name}}").split(),
            "pods": pods,
            "networks": networks,
        }
