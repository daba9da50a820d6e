"""The container image, built and run: scripts/image.sh builds the Dockerfile (locked
dependencies) on the local Debian base, then the image runs `version`, `check-config`
and `run` as its own user, read-only and without capabilities. The daemon in the
container follows the simulator, writes its windows and predictions to the session's
Redis on the host, answers /readyz and /metrics, and exits 0 on SIGTERM within the
grace period. The image's hygiene is checked in the image itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from streamer.simulator import Simulator, SimulatorConfig
from testkit.daemon import daemon_settings, http_get, write_demo_models
from testkit.process import write_config
from testkit.redis_servers import free_port
from tests.container_helpers import CONTAINER_TEST_TIMEOUT, Container, podman, run_once
from whalecast import __version__
from whalecast.keys import Keys

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.tf,
    CONTAINER_TEST_TIMEOUT,
]

MODELS = "/var/lib/whalecast/models"
GRACE_SECONDS = 30.0  # the compose file's stop_grace_period and the pods' grace period
START_TIMEOUT_SECONDS = 240.0  # TensorFlow's import and the models' load, on a busy machine
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(bar_seconds=None, history_bars=120)) as simulator:
        yield simulator


@pytest.fixture
def mounts(sim: Simulator, redis_url: str, tmp_path: Path) -> list[str]:
    """Config, secrets and a registry with two models, readable by the image's user."""
    port = free_port()
    settings = daemon_settings(
        sim, redis_url, Path(MODELS), metrics={"port": port, "host": "0.0.0.0"},
        log={"level": "INFO", "format": "json"}, inference={"backend": "keras"},
    )  # fmt: skip
    config = write_config(tmp_path / "config.yml", settings)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "whale_api_key").write_text(sim.config.whale_api_key)
    registry = tmp_path / "models"
    write_demo_models(registry)
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return [f"{config}:/etc/whalecast/config.yml:ro", f"{secrets}:/run/secrets:ro",
            f"{registry}:{MODELS}:ro"]  # fmt: skip


def metrics_port(mounts: list[str]) -> int:
    import yaml

    config = Path(mounts[0].split(":")[0])
    return int(yaml.safe_load(config.read_text())["metrics"]["port"])


async def until_ready(container: Container, port: int) -> float:
    """Seconds from the container's start until /readyz answers 200."""
    import aiohttp

    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if (await http_get(port, "/readyz"))[0] == 200:
                return time.monotonic() - container.started
        except aiohttp.ClientError:
            pass
        if not container.running():
            raise AssertionError(f"the container exited:\n{container.logs()[-4000:]}")
        await asyncio.sleep(0.2)
    raise AssertionError(f"not ready in time:\n{container.logs()[-4000:]}")


async def until_predictions(redis: aioredis.Redis, count: int, container: Container) -> float:
    """The monotonic time when the predictions stream first held ``count`` entries."""
    stream = Keys("wc").predictions_stream
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if await redis.xlen(stream) >= count:
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} predictions never came:\n{container.logs()[-4000:]}")


def test_version_as_the_image_user(whalecast_image: str) -> None:
    result = run_once(whalecast_image, "version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"whalecast {__version__}"


def test_check_config_reads_the_mounted_config(whalecast_image: str, mounts: list[str]) -> None:
    result = run_once(whalecast_image, "check-config", mounts=mounts)
    assert result.returncode == 0, result.stderr
    assert "configuration OK (1 exchange(s)" in result.stderr
    shown = json.loads(result.stdout)
    assert shown["inference"]["registry"] == MODELS


# run in the image: its user, the compilers on PATH, any download cache (pip's is
# ~/.cache/pip) left behind
HYGIENE_PROBE = f"""
import json, os, shutil
left = [os.path.join(r, n) for r, dirs, files in os.walk("/")
        if not r.startswith(("/proc", "/sys", "/dev"))
        for n in dirs if n == ".cache"]
print(json.dumps({{"uid": os.getuid(), "left": left,
                  "compilers": [t for t in {COMPILERS!r} if shutil.which(t)]}}))
"""


def test_image_hygiene(whalecast_image: str) -> None:
    config = json.loads(podman("image", "inspect", whalecast_image))[0]["Config"]
    assert config["User"] == "10001:10001"
    result = run_once(whalecast_image, "-c", HYGIENE_PROBE, entrypoint="python")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"uid": 10001, "left": [], "compilers": []}


def log_events(output: str) -> list[dict[str, Any]]:
    """The daemon's JSON log lines (TensorFlow's own lines are skipped)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def drain_seconds(events: list[dict[str, Any]]) -> float:
    """From the stop request to "daemon stopped", by the daemon's own timestamps."""
    from datetime import datetime

    def at(name: str) -> datetime:
        return datetime.fromisoformat([e for e in events if e["event"] == name][-1]["timestamp"])

    return (
        at("daemon stopped") - at("stop requested, finishing the bar in flight")
    ).total_seconds()


def published(metrics_text: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "whalecast_predictions_published_total"
    )


async def test_container_predicts_and_stops_on_sigterm(
    whalecast_image: str, sim: Simulator, mounts: list[str], redis_client: aioredis.Redis
) -> None:
    port = metrics_port(mounts)
    volumes = [part for mount in mounts for part in ("--volume", mount)]
    container = Container.start(
        whalecast_image, f"whalecast-test-{port}", "run",
        options=["--network", "host", *volumes],
    )  # fmt: skip
    try:
        per_bar = 2 * len(sim.symbols)  # two models
        # the bar that had just closed when it started, then the next one
        first = await until_predictions(redis_client, per_bar, container)
        ready = await until_ready(container, port)
        await sim.advance(1)
        await until_predictions(redis_client, 2 * per_bar, container)
        status, text = await http_get(port, "/metrics")
        assert status == 200
        assert published(text) == 2 * per_bar
        code, took = container.stop(GRACE_SECONDS)
        assert code == 0, container.logs()[-4000:]
        assert took < GRACE_SECONDS
        stopped = [e for e in log_events(container.logs()) if e["event"] == "daemon stopped"]
        assert stopped and stopped[-1]["drained"] is True
        print(f"start to first prediction {first - container.started:.1f} s, "
              f"to ready {ready:.1f} s, SIGTERM to exit {took:.1f} s; "
              f"drain {drain_seconds(log_events(container.logs())):.1f} s")  # fmt: skip
    finally:
        container.remove()
