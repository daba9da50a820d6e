"""Containers for the deploy tests: the image built once by scripts/image.sh, podman
commands with the settings scripts/podman-env.sh gives the scripts, and containers run
with the restrictions the deployments ask for (the image's own user, a read-only root
filesystem, every capability dropped).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streamer.simulator import SimulatorConfig
from testkit.redis_servers import require_tool

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
IMAGE = "localhost/whalecast:local"
# the restrictions of the compose file (read_only, cap_drop, no-new-privileges, tmpfs)
HARDENED = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--tmpfs", "/tmp")  # fmt: skip
# pip downloads the locked dependencies (TensorFlow among them) on a cold cache
BUILD_TIMEOUT_SECONDS = 3600.0
# the first container test of a run builds the image in its set-up
CONTAINER_TEST_TIMEOUT = pytest.mark.timeout(BUILD_TIMEOUT_SECONDS + 900)
# a simulator that containers on a bridge network reach at host.containers.internal
REACHABLE_SIM = SimulatorConfig(bar_seconds=None, history_bars=120, host="0.0.0.0")


def podman_env() -> dict[str, str]:
    """The environment the scripts give podman (scripts/podman-env.sh)."""
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env and not Path("/etc/containers/containers.conf").exists():
        env["CONTAINERS_CONF"] = str(SCRIPTS / "containers.conf")
    return env


def require_podman() -> str:
    """podman's path; skip when podman cannot run containers here at all."""
    if os.geteuid() != 0:
        pytest.skip("podman runs containers here only as root (no rootless set-up): run as root")
    require_tool("debootstrap")
    return require_tool("podman")


def podman(*args: str, timeout: float = 300.0, check: bool = True) -> str:
    """Run one podman command; its standard output (a failure shows both streams)."""
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env()
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def build_image() -> str:
    """The whalecast image (built, or taken from the layer cache), as `make image` builds it."""
    result = subprocess.run(
        [str(SCRIPTS / "image.sh")], cwd=ROOT, capture_output=True, text=True,
        timeout=BUILD_TIMEOUT_SECONDS, env={**podman_env(), "IMAGE": IMAGE},
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"scripts/image.sh failed:\n{result.stderr[-6000:]}")
    return result.stdout.strip().splitlines()[-1]


def run_once(
    image: str, *args: str, mounts: Sequence[str] = (), entrypoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``podman run --rm`` of the image, hardened, with its default user."""
    options = [part for mount in mounts for part in ("--volume", mount)]
    if entrypoint is not None:
        options += ["--entrypoint", entrypoint]
    return subprocess.run(
        ["podman", "run", "--rm", *HARDENED, *options, image, *args],
        capture_output=True, text=True, timeout=300, env=podman_env(),
    )  # fmt: skip


@dataclass
class Container:
    """One detached container; :meth:`remove` deletes whatever is left of it."""

    name: str
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, image: str, name: str, *args: str, options: Sequence[str] = ()) -> Container:
        started = time.monotonic()
        podman("run", "--detach", "--name", name, *HARDENED, *options, image, *args)
        return cls(name, started)

    def logs(self) -> str:
        result = subprocess.run(
            ["podman", "logs", self.name], capture_output=True, text=True, timeout=60,
            env=podman_env(),
        )  # fmt: skip
        return result.stdout + result.stderr

    def running(self) -> bool:
        return podman("inspect", "--format", "{{.State.Running}}", self.name).strip() == "true"

    def stop(self, grace_seconds: float) -> tuple[int, float]:
        """SIGTERM (SIGKILL after the grace period, as Docker and Kubernetes do): the exit
        status and the seconds it took."""
        began = time.monotonic()
        podman("stop", "--time", str(int(grace_seconds)), self.name, timeout=grace_seconds + 60)
        took = time.monotonic() - began
        code = podman("inspect", "--format", "{{.State.ExitCode}}", self.name).strip()
        return int(code), took

    def remove(self) -> None:
        podman("rm", "--force", "--ignore", self.name, check=False)


def service_image(name: str) -> str:
    """A test-only service image (tests/compose/NAME.Containerfile) on the local base
    (built once, then from podman's layer cache)."""
    tag = f"localhost/whalecast-test-{name}:bookworm"
    base = subprocess.run(
        [str(SCRIPTS / "base-image.sh")], capture_output=True, text=True,
        timeout=BUILD_TIMEOUT_SECONDS, env=podman_env(), check=True,
    ).stdout.strip()  # fmt: skip
    containerfile = ROOT / "tests" / "compose" / f"{name}.Containerfile"
    podman("build", "--build-arg", f"BASE_IMAGE={base}", "--file", str(containerfile),
           "--tag", tag, str(containerfile.parent), timeout=BUILD_TIMEOUT_SECONDS)  # fmt: skip
    return tag
