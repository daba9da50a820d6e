"""Helpers for end-to-end tests: settings pointing the daemon at a simulator, tiny models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from inference.daemon import Daemon
from streamer.features import FEATURE_NAMES
from streamer.simulator import Simulator
from tests.model_artifacts import preprocess_for, small_model, write_model
from whalecast.metrics import Metrics
from whalecast.settings import Settings, load_settings


def daemon_settings(sim: Simulator, redis_url: str, registry: Path, **sections: Any) -> Settings:
    """Settings for a daemon fed by ``sim``; ``sections`` override whole sections' fields."""
    return load_settings(None, **daemon_config(sim, redis_url, registry, **sections))


def daemon_config(
    sim: Simulator, redis_url: str, registry: Path, **sections: Any
) -> dict[str, Any]:
    """The same as a config-file mapping (what ``whalecast run --config`` reads)."""
    base: dict[str, Any] = {
        "redis": {"url": redis_url, "prefix": "wc"},
        "exchanges": [
            {
                "id": "binance", "symbols": list(sim.symbols), "timeframe": sim.timeframe,
                "rest_url": sim.rest_url, "ws_url": sim.ws_url, "enable_rate_limit": False,
            }
        ],
        "feed": {"clock": "replay", "grace_seconds": 1.0, "backoff_initial_seconds": 0.05,
                 "backoff_max_seconds": 0.5, "stale_after_seconds": 5.0},
        "whale": {"enabled": True, "url": sim.whale_url, "api_key": sim.config.whale_api_key},
        "inference": {"registry": str(registry), "models": ["direction", "volume"],
                      "backend": "tf-function", "reload_poll_seconds": 0.5},
        "metrics": {"port": 0},
    }  # fmt: skip
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(base.get(name), dict):
            base[name] = {**base[name], **values}
        else:
            base[name] = values
    return base


def write_demo_models(registry: Path, seed: int = 0) -> dict[str, str]:
    """A direction model over every feature and a volume model over log_volume."""
    n = len(FEATURE_NAMES)
    direction = write_model(
        registry, "direction", small_model(24, n, seed=seed), preprocess_for(FEATURE_NAMES)
    )
    volume = write_model(
        registry, "volume", small_model(24, 1, seed=seed + 1),
        preprocess_for(["log_volume"], target="next_bar_volume", target_transform="log1p",
                       target_scaler={"mean": [5.0], "scale": [1.0]}),
    )  # fmt: skip
    return {"direction": direction, "volume": volume}


class Subscriber:
    """A real Redis subscriber collecting prediction messages."""

    def __init__(self, redis: Any, channel: str) -> None:
        self.pubsub = redis.pubsub()
        self.channel = channel
        self.messages: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        await self.pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._collect())
        return self

    async def _collect(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] == "message":
                self.messages.append(json.loads(message["data"]))

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pubsub.aclose()

    async def wait_for(self, count: int, timeout_seconds: float = 30.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout_seconds):
            while len(self.messages) < count:  # noqa: ASYNC110 - filled by another task
                await asyncio.sleep(0.02)
        return self.messages


@asynccontextmanager
async def running_daemon(
    settings: Settings, redis: Any, metrics: Metrics | None = None
) -> AsyncIterator[Daemon]:
    daemon = Daemon(settings, metrics or Metrics(), redis)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def clocks_caught_up(sim: Simulator, *daemons: Daemon, timeout_seconds: float = 10.0) -> None:
    """Until every daemon's replay clock shows the simulator's time.

    Step the simulator only then: a bar played before a daemon's clock has seen the
    previous step carries candles from that daemon's "future", which it rejects.
    """
    async with asyncio.timeout(timeout_seconds):
        for daemon in daemons:
            for feed in daemon.feeds:
                while feed.clock.now_ms() < sim.now_ms:  # noqa: ASYNC110 - polled by the feed
                    await asyncio.sleep(0.01)


async def wait_until_ready(daemon: Daemon, timeout_seconds: float = 30.0) -> None:
    """Until the feeds are connected and every window is complete."""
    async with asyncio.timeout(timeout_seconds):
        while True:
            _w, ready = daemon.store.windows(daemon.series)
            if all(f.connected for f in daemon.feeds) and ready.all():
                return
            await asyncio.sleep(0.05)
