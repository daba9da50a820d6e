"""End to end on a real 3-master Redis Cluster, with a replica dying mid-bar and another
taking its series over.

One replay is played twice through the daemon: once on a single redis-server with
nothing going wrong (the reference), once on the Cluster where the first replica
stores a bar and dies before publishing it, more bars close while no replica
runs, and a second replica takes over. The Cluster run must publish the very
same predictions (same bars, values to 1e-6), each exactly once, on the channel
(a cluster pub/sub subscriber), in the stream and in the latest hashes; the
second replica must also hot-reload a model from a notice sent through the
Cluster's pub/sub.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from inference.daemon import Daemon
from inference.publisher import PredictionOut, Publisher
from streamer.simulator import Simulator, SimulatorConfig
from testkit.daemon import (
    Subscriber,
    clocks_caught_up,
    daemon_settings,
    running_daemon,
    wait_until_ready,
    write_demo_models,
)
from testkit.models import preprocess_for, small_model, write_model
from tests.floats import float32_approx
from whalecast.metrics import Metrics
from whalecast.redisconn import RedisHandle
from whalecast.schema import Prediction
from whalecast.settings import Settings

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

SYMBOLS = 6
MODELS = 2
BARS = 5  # bars played after start-up; the bar that had just closed is predicted too
Key = tuple[str, str, int]  # symbol, model, bar open time


def simulator() -> Simulator:
    return Simulator(
        SimulatorConfig(synthetic=SYMBOLS, synthetic_bars=200, history_bars=120,
                        bar_seconds=None, whale=False)
    )  # fmt: skip


def settings_for(sim: Simulator, url: str, registry: Path, **sections: Any) -> Settings:
    inference = {"shutdown_grace_seconds": 0.5, **sections.pop("inference", {})}
    return daemon_settings(
        sim, url, registry, whale={"enabled": False}, inference=inference, **sections
    )


def by_key(messages: Sequence[dict[str, Any]]) -> dict[Key, list[Prediction]]:
    out: dict[Key, list[Prediction]] = {}
    for message in messages:
        p = Prediction.parse(json.dumps(message))
        out.setdefault((p.symbol, p.model, p.bar_open_ms), []).append(p)
    return out


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    write_demo_models(tmp_path / "registry")
    return tmp_path / "registry"


async def single_redis_run(registry: Path, redis_url: str) -> dict[Key, float]:
    """The replay on a single redis-server, nothing going wrong: value per key."""
    async with simulator() as sim:
        settings = settings_for(sim, redis_url, registry)
        client = aioredis.Redis.from_url(redis_url)
        try:
            async with (
                Subscriber(client, "wc:predictions") as sub,
                running_daemon(settings, client) as daemon,
            ):
                await wait_until_ready(daemon)
                await sub.wait_for(SYMBOLS * MODELS)  # the bar that had just closed
                for _ in range(BARS):
                    await clocks_caught_up(sim, daemon)
                    await sim.advance(bars=1)
                    await sub.wait_for(len(sub.messages) + SYMBOLS * MODELS)
        finally:
            await client.aclose()
    keys = by_key(sub.messages)
    assert set(map(len, keys.values())) == {1}
    return {key: found[0].value for key, found in keys.items()}


class DyingPublisher(Publisher):
    """The real publisher, except that the replica "dies" at bar ``dies_at``: the
    bar is stored (the bar loop appended it) but its predictions never leave."""

    def __init__(self, *args: Any, dies_at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dies_at = dies_at
        self.died = asyncio.Event()

    async def publish(self, predictions: Sequence[PredictionOut]) -> int:
        if any(p.bar_open_ms >= self.dies_at for p in predictions):
            self.died.set()
            await asyncio.Event().wait()  # never returns: cancelled when the replica dies
        return await super().publish(predictions)


async def kill(daemon: Daemon) -> None:
    """Stop a replica whose bar is stuck: nothing more leaves it."""
    assert not await daemon.stop()  # the stuck bar did not drain
    assert daemon.bar_loop is not None
    for task in list(daemon.bar_loop._flushes):
        task.cancel()


async def test_cluster_takeover_publishes_the_single_redis_predictions_once(
    registry: Path, redis_url: str, cluster_client: RedisCluster, redis_cluster_url: str
) -> None:
    reference = await single_redis_run(registry, redis_url)
    bars = sorted({bar for _s, _m, bar in reference})
    assert len(bars) == BARS + 1
    async with simulator() as sim, Subscriber(cluster_client, "wc:predictions") as sub:
        settings = settings_for(
            sim, redis_cluster_url, registry, redis={"url": redis_cluster_url, "cluster": True},
            inference={"reload_poll_seconds": 3600.0},
        )  # fmt: skip
        # replica A: predicts the first two bars, stores the third and dies before publishing
        async with RedisHandle(settings.redis) as client_a:
            first = Daemon(settings, Metrics(), client_a)
            dying = DyingPublisher(
                client_a, first.keys, 1000, first.metrics, marks=first.marks, dies_at=bars[2]
            )
            first.publisher = dying
            await first.start()
            await wait_until_ready(first)
            await sub.wait_for(SYMBOLS * MODELS)
            # the second bar is published whole before the third plays (under load a bar can
            # go out in two batches, the late series after the grace: the third bar must not
            # overtake them, or the dying publisher would take the late ones with it)
            await clocks_caught_up(sim, first)
            await sim.advance(bars=1)
            await sub.wait_for(2 * SYMBOLS * MODELS)
            await clocks_caught_up(sim, first)
            await sim.advance(bars=1)
            await asyncio.wait_for(dying.died.wait(), 30)
            await sub.drained()
            assert len(sub.messages) == 2 * SYMBOLS * MODELS
            await kill(first)
        # two more bars close while no replica runs
        await sim.advance(bars=2)
        # replica B takes over: the stored bar, the two missed ones, then live bars
        async with RedisHandle(settings.redis) as client_b:
            metrics = Metrics()
            async with running_daemon(settings, client_b, metrics) as second:
                await sub.wait_for(5 * SYMBOLS * MODELS)
                await clocks_caught_up(sim, second)
                await sim.advance(bars=1)
                await sub.wait_for(6 * SYMBOLS * MODELS)
                await check_model_notice(second, cluster_client, registry)
            # the stored bar and the bar that closed before B started; the newest is live
            assert metrics.bars_caught_up.labels("1h")._value.get() == 2 * SYMBOLS
        await sub.drained()  # whatever the replicas published has arrived

    found = by_key(sub.messages)
    duplicates = {key: len(v) for key, v in found.items() if len(v) > 1}
    assert not duplicates, f"published more than once: {duplicates}"
    assert set(found) == set(reference), "the same series, models and bars"
    for key, value in reference.items():
        assert found[key][0].value == float32_approx(value), key
    await check_stream_and_latest(cluster_client, found)


async def check_stream_and_latest(cluster_client: RedisCluster, found: dict[Key, Any]) -> None:
    stream = await cluster_client.xrange("wc:predictions:stream")
    keys = Counter()
    for _id, fields in stream:
        p = Prediction.parse(fields[b"data"])
        keys[(p.symbol, p.model, p.bar_open_ms)] += 1
    assert keys == dict.fromkeys(found, 1)
    newest = max(bar for _s, _m, bar in found)
    for model in ("direction", "volume"):
        latest = await cluster_client.hgetall(f"wc:latest:{model}")
        assert len(latest) == SYMBOLS
        assert {Prediction.parse(v).bar_open_ms for v in latest.values()} == {newest}


async def check_model_notice(daemon: Daemon, cluster_client: RedisCluster, registry: Path) -> None:
    """A new version announced on the Cluster's pub/sub reaches the replica (no polling)."""
    version = write_model(
        registry, "volume", small_model(24, 1, seed=5),
        preprocess_for(["log_volume"], target="next_bar_volume", target_transform="log1p",
                       target_scaler={"mean": [5.0], "scale": [1.0]}),
    )  # fmt: skip
    await cluster_client.publish("wc:models", json.dumps({"model": "volume", "version": version}))
    loaded = daemon.metrics.model_reloads.labels("volume", "loaded")
    async with asyncio.timeout(30):
        while loaded._value.get() < 2:  # noqa: ASYNC110 - set by the replica's watcher
            await asyncio.sleep(0.05)
