"""The Kubernetes base run by `podman kube play`: the rendered Deployment of the daemon,
with its generated ConfigMap and Secret, as one pod. The test changes only what a
cluster would supply differently: the image (the one built here), the config (the
exchange and Whale Alert at the simulator in this process), a Redis container in the
pod (Debian's redis-server, requiring the Secret's password) and host ports for Redis and
the metrics port. The daemon fetches its models from Redis (`registry_sync: redis`, as
the trainer publishes them), becomes ready on its readiness probe's endpoint, predicts,
and `podman kube down` removes the pod (the ConfigMap and Secret volumes and the podman
secret it leaves are removed by the test). StatefulSet, CronJob, Service, ServiceMonitor and
PodDisruptionBudget stay schema-checked only (tests/test_deploy_k8s.py).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from streamer.simulator import Simulator
from testkit.daemon import http_get, write_demo_models
from testkit.redis_servers import free_port
from tests.container_helpers import CONTAINER_TEST_TIMEOUT, REACHABLE_SIM, podman, service_image
from tests.kustomize_render import render
from whalecast.artifact_sync import publish_artifact
from whalecast.keys import Keys

pytestmark = [pytest.mark.deploy, pytest.mark.slow, pytest.mark.tf, CONTAINER_TEST_TIMEOUT]

K8S_BASE = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "base"
HOST = "host.containers.internal"  # podman's name for the host, from a pod
TIMEOUT_SECONDS = 300.0
POD = "whalecast-pod-0"  # podman's name for the Deployment's first pod
# secret values that are also valid base64 text (see manifests)
PASSWORD = "a3ViZXBsYXk0"
WHALE_KEY = "c2ltdWxhdG9y"
Obj = dict[str, Any]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = dataclasses.replace(REACHABLE_SIM, whale_api_key=WHALE_KEY)
    async with Simulator(config) as simulator:
        yield simulator


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    """The object of ``kind`` called ``name`` (generated ones: ``name-<hash>``)."""
    generated = kind in ("ConfigMap", "Secret")
    [found] = [o for o in objects if o["kind"] == kind
               and (o["metadata"]["name"].rsplit("-", 1)[0] if generated
                    else o["metadata"]["name"]) == name]  # fmt: skip
    return found


def pod_config(config: Obj, sim: Simulator) -> Obj:
    """The base's config.yml with the exchange and Whale Alert at the simulator."""
    at = f"{HOST}:{sim.port}"
    exchange = {k: (v.replace(f"0.0.0.0:{sim.port}", at) if isinstance(v, str) else v)
                for k, v in sim.exchange_section().items()}  # fmt: skip
    whale_url = sim.whale_section()["url"].replace(f"0.0.0.0:{sim.port}", at)
    return {
        **config,
        "redis": {"url": "redis://127.0.0.1:6379/0"},  # the Redis container of the pod
        "exchanges": [exchange],
        "whale": {"enabled": True, "url": whale_url},
        "feed": {"clock": "replay", "grace_seconds": 1.0},
        "inference": {**config["inference"], "reload_poll_seconds": 1.0},
    }


def manifests(sim: Simulator, image: str, ports: dict[str, int]) -> tuple[list[Obj], str]:
    """The rendered base's Deployment, ConfigMap and Secret, changed for this machine;
    and the Secret's Redis password."""
    objects = copy.deepcopy(render(K8S_BASE))
    deployment = one(objects, "Deployment", "whalecast")
    configmap = one(objects, "ConfigMap", "whalecast-config")
    secret = one(objects, "Secret", "whalecast-secrets")
    config = pod_config(yaml.safe_load(configmap["data"]["config.yml"]), sim)
    configmap["data"]["config.yml"] = yaml.safe_dump(config)
    # the Secret's values, as an overlay replaces the base's placeholders
    values = {"redis_password": PASSWORD, "whale_api_key": sim.config.whale_api_key}
    assert set(secret["data"]) <= set(values)
    if podman_version() < (4, 4):
        # podman 4.3 checks that a Secret's values are base64 but mounts them undecoded:
        # the test's values are base64 text themselves, given as they are
        secret["data"] = values
    else:
        secret["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    password = PASSWORD
    spec = deployment["spec"]["template"]["spec"]
    [daemon] = spec["containers"]
    daemon["image"] = image
    daemon["ports"][0]["hostPort"] = ports["metrics"]
    spec["containers"].append({
        "name": "redis",
        "image": service_image("redis"),
        # the pod's user (10001) runs it too: no persistence, nothing to write
        "args": ["redis-server", "--requirepass", password, "--dir", "/tmp", "--save", ""],
        "ports": [{"containerPort": 6379, "hostPort": ports["redis"]}],
    })  # fmt: skip
    return [configmap, secret, deployment], password


def podman_version() -> tuple[int, int]:
    major, minor = podman("version", "--format", "{{.Client.Version}}").split(".")[:2]
    return int(major), int(minor)


def remove_volumes_and_secret(objects: list[Obj]) -> None:
    """What `podman kube down` 4.3 leaves: a volume per ConfigMap and Secret, the secret."""
    for obj in objects:
        if obj["kind"] in ("ConfigMap", "Secret"):
            podman("volume", "rm", "--force", obj["metadata"]["name"], check=False)
        if obj["kind"] == "Secret":
            podman("secret", "rm", obj["metadata"]["name"], check=False)


def readiness_path(deployment: Obj) -> str:
    [daemon] = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                if c["name"] == "whalecast"]  # fmt: skip
    return str(daemon["readinessProbe"]["httpGet"]["path"])


async def until(check: Any, what: str, logs: Any) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except (OSError, aioredis.RedisError, aiohttp.ClientError):
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{logs()}")


async def test_kube_play_of_the_base_deployment_becomes_ready_and_predicts(
    sim: Simulator, whalecast_image: str, tmp_path: Path
) -> None:
    ports = {"metrics": free_port(), "redis": free_port()}
    objects, password = manifests(sim, whalecast_image, ports)
    kube = tmp_path / "whalecast.yaml"
    kube.write_text(yaml.safe_dump_all(objects), encoding="utf-8")
    registry = tmp_path / "trainer"
    versions = write_demo_models(registry)
    redis = aioredis.Redis(host="127.0.0.1", port=ports["redis"], password=password)

    def logs() -> str:
        return podman("pod", "logs", "--tail", "60", POD, check=False)[-4000:]

    try:
        podman("kube", "play", str(kube))
        await until(redis.ping, "the pod's Redis", logs)
        for model, version in versions.items():
            await publish_artifact(redis, Keys("whalecast"), registry, model, version)
        path = readiness_path(objects[-1])
        await until(lambda: _ready(sim, ports["metrics"], path), "readiness", logs)
        await sim.advance(1)
        stream = Keys("whalecast").predictions_stream
        want = 2 * len(sim.symbols)
        await until(lambda: _at_least(redis.xlen(stream), want), "predictions", logs)
    finally:
        await redis.aclose()
        podman("kube", "down", str(kube), check=False)
        remove_volumes_and_secret(objects)
    assert POD not in podman("pod", "ps", "--format", "{{.Name}}").split()


async def _ready(sim: Simulator, port: int, path: str) -> bool:
    if (await http_get(port, path))[0] == 200:
        return True
    await sim.advance(1)  # a version fetched on a notice goes into service at a bar
    return False


async def _at_least(value: Any, count: int) -> bool:
    return int(await value) >= count
