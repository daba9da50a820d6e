"""`whalecast run` with the onnx backend: the same predictions as a TensorFlow backend,
with no TensorFlow in the process.

Two daemon processes, one per backend, are fed by one simulator and publish under their
own Redis prefixes; every prediction of the onnx daemon equals the tf-function daemon's
for the same series, bar and model to float32 precision (tests/floats.py). The onnx
daemon's start-up line names the model runtimes it loaded: onnxruntime, not TensorFlow
or Keras.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from benchmarks.benchmodels import volume_preprocess
from streamer.features import FEATURE_NAMES
from streamer.simulator import Simulator, SimulatorConfig
from testkit.daemon import Subscriber, daemon_config, of_bar
from testkit.models import preprocess_for, small_model, write_model
from testkit.polling import wait_until
from testkit.process import DaemonProcess
from testkit.redis_servers import free_port
from tests.floats import float32_approx

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

BACKENDS = {"tf": "tf-function", "ox": "onnx"}  # Redis prefix -> backend
BARS = 3


def write_models(registry: Path) -> None:
    n = len(FEATURE_NAMES)
    direction = small_model(24, n, seed=1)
    write_model(registry, "direction", direction, preprocess_for(FEATURE_NAMES), graphs=True)
    volume = small_model(24, 1, seed=2)
    write_model(registry, "volume", volume, volume_preprocess(), graphs=True)


def start(sim: Simulator, redis_url: str, registry: Path, prefix: str, tmp: Path) -> DaemonProcess:
    port = free_port()
    config = daemon_config(
        sim, redis_url, registry, redis={"url": redis_url, "prefix": prefix},
        inference={"backend": BACKENDS[prefix]}, metrics={"port": port},
        log={"level": "INFO", "format": "json"},
    )  # fmt: skip
    path = tmp / f"{prefix}.yml"
    path.write_text(yaml.safe_dump(config))
    return DaemonProcess(path, tmp / f"{prefix}.log", metrics_port=port)


def by_key(messages: list[dict[str, Any]]) -> dict[tuple[str, int, str], float]:
    return {(m["symbol"], m["bar_open_ms"], m["model"]): m["value"] for m in messages}


async def test_onnx_daemon_publishes_what_the_tensorflow_daemon_does_without_tensorflow(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    write_models(registry)
    async with (
        Simulator(SimulatorConfig(bar_seconds=None, history_bars=120)) as sim,
        Subscriber(redis_client, "tf:predictions") as tf_sub,
        Subscriber(redis_client, "ox:predictions") as ox_sub,
    ):
        daemons = {p: start(sim, redis_url, registry, p, tmp_path) for p in BACKENDS}
        try:
            for daemon in daemons.values():
                await daemon.wait_ready(180)
            per_bar = 2 * len(sim.symbols)
            bars = []
            for _ in range(BARS):
                bars.append(sim.now_ms)
                await sim.advance()
                for sub in (tf_sub, ox_sub):
                    await wait_until(
                        lambda s=sub, b=bars[-1]: len(of_bar(s.messages, b)) == per_bar, 60,
                        what=f"bar {bars[-1]}'s predictions on {sub.channel}",
                    )  # fmt: skip
            events = {p: d.log_events() for p, d in daemons.items()}
        finally:
            for daemon in daemons.values():
                daemon.close()

    tf_values = by_key([m for b in bars for m in of_bar(tf_sub.messages, b)])
    ox_values = by_key([m for b in bars for m in of_bar(ox_sub.messages, b)])
    assert len(ox_values) == BARS * per_bar
    assert ox_values.keys() == tf_values.keys()
    for key, value in ox_values.items():
        assert value == float32_approx(tf_values[key]), key
    started = {p: [e for e in ev if e.get("event") == "daemon started"] for p, ev in events.items()}
    assert started["ox"][0]["backend"] == "onnx"
    assert started["ox"][0]["frameworks"] == ["onnxruntime"]
    assert "tensorflow" in started["tf"][0]["frameworks"]
    loaded = [e for e in events["ox"] if e.get("event") == "model version in service"]
    assert {e["model"] for e in loaded} == {"direction", "volume"}
