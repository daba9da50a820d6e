"""The compose stack brought up for real with podman-compose: deploy/compose/docker-compose.yml
plus tests/compose/override.yml (local images, the exchange and Whale Alert at the
simulator, which runs in this process). Redis, the daemon, one trainer and Prometheus
come up; the trainer's quick models reach the daemon through the shared `models` volume; the daemon predicts into Redis; Prometheus scrapes it; `down -v` leaves nothing.
Grafana has no Debian package: its service is not started (it stays lint-only).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from streamer.simulator import Simulator
from testkit.daemon import http_get
from testkit.redis_servers import free_port
from tests.compose_stack import COMPOSE_FILE, Stack
from tests.container_helpers import CONTAINER_TEST_TIMEOUT, REACHABLE_SIM, service_image
from whalecast.keys import Keys

pytestmark = [pytest.mark.deploy, pytest.mark.slow, CONTAINER_TEST_TIMEOUT]

SERVICES = ["redis", "whalecast", "trainer-volume", "prometheus"]
# podman's name for the host, from inside a container on a bridge network
HOST = "host.containers.internal"
# a quick training run and TensorFlow's imports share two cores with the rest
TIMEOUT_SECONDS = 600.0


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(REACHABLE_SIM) as simulator:
        yield simulator


def stack_config(sim: Simulator) -> dict[str, Any]:
    """deploy/compose/config.yml with the exchange and Whale Alert at the simulator."""
    config = yaml.safe_load((COMPOSE_FILE.parent / "config.yml").read_text(encoding="utf-8"))
    base = f"{HOST}:{sim.port}"
    exchange = sim.exchange_section()
    exchange.update(rest_url=exchange["rest_url"].replace(f"0.0.0.0:{sim.port}", base),
                    ws_url=exchange["ws_url"].replace(f"0.0.0.0:{sim.port}", base))  # fmt: skip
    whale = sim.whale_section()
    config.update(
        exchanges=[exchange],
        whale={"enabled": True, "url": whale["url"].replace(f"0.0.0.0:{sim.port}", base)},
        feed={"clock": "replay", "grace_seconds": 1.0},
        log={"format": "json", "level": "INFO"},
    )
    config["inference"] = {**config["inference"], "reload_poll_seconds": 1.0}
    return config


@pytest.fixture
def stack(sim: Simulator, tmp_path: Path, whalecast_image: str) -> Stack:
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(stack_config(sim)), encoding="utf-8")
    config.chmod(0o644)
    return Stack(
        project=f"whalecast-test-{os.getpid()}",
        variables={
            "WCTEST_IMAGE": whalecast_image,
            "WCTEST_REDIS_IMAGE": service_image("redis"),
            "WCTEST_PROMETHEUS_IMAGE": service_image("prometheus"),
            "WCTEST_WHALE_API_KEY": sim.config.whale_api_key,
        },
        ports={service: free_port() for service in ("redis", "whalecast", "prometheus")},
        config=config,
        directory=tmp_path,
    )


async def poll(check: Callable[[], Awaitable[Any]], what: str, stack: Stack, service: str) -> Any:
    """Until ``check`` returns something true; fails with the service's logs."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            found = await check()
        except (OSError, ValueError, aioredis.RedisError, aiohttp.ClientError) as e:
            found = None
            last = repr(e)
        else:
            last = repr(found)
        if found:
            return found
        await asyncio.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what} (last: {last}):\n{stack.logs(service)}")


async def test_compose_stack_predicts_is_scraped_and_leaves_nothing(
    sim: Simulator, stack: Stack
) -> None:
    password = (COMPOSE_FILE.parent / "secrets" / "redis_password").read_text().strip()
    redis = aioredis.Redis(host="127.0.0.1", port=stack.ports["redis"],
                           password=password)  # fmt: skip
    try:
        stack.compose("up", "--detach", "--no-build", *SERVICES)
        assert set(stack.containers()) == set(SERVICES)

        async def trainer_done() -> bool:
            status, code = stack.state("trainer-volume")
            assert status != "exited" or code == 0, stack.logs("trainer-volume")
            return status == "exited"

        await poll(trainer_done, "the trainer's quick run", stack, "trainer-volume")

        async def ready() -> bool:
            if (await http_get(stack.ports["whalecast"], "/readyz"))[0] == 200:
                return True
            await sim.advance(1)  # a version that came in goes into service at a bar
            return False

        await poll(ready, "the daemon's readiness", stack, "whalecast")
        await sim.advance(1)
        stream = Keys("whalecast").predictions_stream

        async def predicted() -> bool:
            return int(await redis.xlen(stream)) >= 2 * len(sim.symbols)  # two models

        await poll(predicted, "predictions in Redis", stack, "whalecast")
        await poll(lambda: scraped(stack.ports["prometheus"]),
                   "Prometheus' scrape of the daemon", stack, "prometheus")  # fmt: skip
    finally:
        await redis.aclose()
        stack.compose("down", "--volumes")
    assert stack.leftovers() == {"containers": [], "volumes": [], "pods": [], "networks": []}


async def scraped(port: int) -> bool:
    """Prometheus has the daemon's target up and a published-predictions sample from it."""
    status, text = await http_get(port, "/api/v1/targets")
    targets = json.loads(text)["data"]["activeTargets"] if status == 200 else []
    if not any(t["labels"]["job"] == "whalecast" and t["health"] == "up" for t in targets):
        return False
    query = "/api/v1/query?query=sum(whalecast_predictions_published_total)"
    status, text = await http_get(port, query)
    result = json.loads(text)["data"]["result"] if status == 200 else []
    return bool(result) and float(result[0]["value"][1]) > 0
