"""Helpers for end-to-end tests: settings pointing the daemon at a simulator, tiny models."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from redis.asyncio.cluster import RedisCluster
from structlog.testing import LogCapture

from benchmarks.benchmodels import volume_preprocess
from inference.daemon import Daemon
from streamer.features import FEATURE_NAMES
from streamer.simulator import Simulator, SimulatorConfig
from testkit.models import (
    DIRECTION_HORIZONS,
    VOLUME_HORIZONS,
    preprocess_for,
    small_model,
    write_horizon_model,
    write_model,
)
from testkit.polling import wait_until
from whalecast.domain import Series
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
        "exchanges": sim.exchange_sections(),
        "feed": {"clock": "replay", "grace_seconds": 1.0, "backoff_initial_seconds": 0.05,
                 "backoff_max_seconds": 0.5, "stale_after_seconds": 5.0},
        "whale": sim.whale_section(),
        "inference": {"registry": str(registry), "models": ["direction", "volume"],
                      "backend": "tf-function", "reload_poll_seconds": 0.5,
                      "batch_buckets": [8]},
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
        volume_preprocess(),
    )  # fmt: skip
    return {"direction": direction, "volume": volume}


MARKER = "test-marker"  # a message the Subscriber keeps apart from predictions


class Subscriber:
    """A real Redis subscriber collecting prediction messages."""

    def __init__(self, redis: Any, channel: str) -> None:
        self.redis = redis
        self.pubsub = redis.pubsub()
        self.channel = channel
        self.messages: list[dict[str, Any]] = []
        self.markers: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        await self.pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._collect())
        return self

    async def _collect(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] == "message":
                data = json.loads(message["data"])
                if isinstance(data, dict) and MARKER in data:
                    self.markers.append(data[MARKER])
                else:
                    self.messages.append(data)

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pubsub.aclose()

    async def wait_for(self, count: int, timeout_seconds: float = 30.0) -> list[dict[str, Any]]:
        await wait_until(
            lambda: len(self.messages) >= count,
            timeout_seconds,
            what=lambda: f"{count} messages on {self.channel} (have {len(self.messages)})",
        )
        return self.messages

    async def drained(self, timeout_seconds: float = 30.0) -> None:
        """Until everything published on the channel before this call has arrived.

        A marker is published after it through every primary (on a Cluster, each node
        forwards its own messages in order), and awaited: the positive signal an absence
        check ("no duplicate came") needs, instead of a pause.
        """
        token = uuid.uuid4().hex
        marker = json.dumps({MARKER: token})
        if isinstance(self.redis, RedisCluster):
            nodes = self.redis.get_primaries()
            for node in nodes:
                await self.redis.execute_command("PUBLISH", self.channel, marker, target_nodes=node)
        else:
            nodes = [self.redis]
            await self.redis.publish(self.channel, marker)
        await wait_until(
            lambda: self.markers.count(token) >= len(nodes), timeout_seconds, what="the marker"
        )


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


async def bar_settled(daemon: Daemon, timeout_seconds: float = 30.0) -> None:
    """Until the bar loop holds no bar and the forward passes it started (early passes,
    priming) are done: the state a bar an hour after the last one finds. A test that
    wants the next bar stepped from primed states waits for this before it sends the bar,
    because the daemon primes only after publishing, and the next bar's pass would
    otherwise take the worker first and run full windows (right values, no steps)."""

    def idle() -> bool:
        loop = daemon.bar_loop
        return loop is not None and not loop.busy.locked()

    await wait_until(idle, timeout_seconds, "the bar loop to finish its bar")
    await daemon.predictor.settle()


async def close_bars(
    sim: Simulator, sub: Subscriber, daemon: Daemon, bars: int, per_bar: int
) -> None:
    """After the bar that had just closed at start, close ``bars`` bars one at a time,
    each once the last one's ``per_bar`` messages arrived and its priming is done (as an
    hour later: the next bar steps from primed states)."""
    await sub.wait_for(per_bar)
    for _ in range(bars):
        expected = len(sub.messages) + per_bar
        await bar_settled(daemon)
        await sim.advance(bars=1)
        await sub.wait_for(expected)


async def wait_until_ready(
    daemon: Daemon, timeout_seconds: float = 30.0, series: Sequence[Series] | None = None
) -> None:
    """Until the feeds are connected and the windows of ``series`` (default all) are complete."""
    wanted = list(daemon.series if series is None else series)
    async with asyncio.timeout(timeout_seconds):
        while True:
            _w, ready = daemon.store.windows(wanted)
            if daemon.feeds and all(f.connected for f in daemon.feeds) and ready.all():
                return
            await asyncio.sleep(0.05)


def metric(daemon: Daemon, name: str, **labels: str) -> float | None:
    """The current value of one sample of the daemon's registry (None if it does not exist)."""
    return daemon.metrics.registry.get_sample_value(name, labels)


def of_bar(messages: Sequence[dict[str, Any]], bar_open_ms: int) -> list[dict[str, Any]]:
    return [m for m in messages if m["bar_open_ms"] == bar_open_ms]


@dataclass
class Running:
    """A simulator, a daemon fed by it, and a subscriber to its predictions."""

    sim: Simulator
    daemon: Daemon
    sub: Subscriber

    async def step(self, bars: int = 1) -> None:
        """Play ``bars`` bars now (the events are written when it returns)."""
        await self.sim.advance(bars=bars)

    def of_bar(self, bar_open_ms: int, model: str | None = None) -> list[dict[str, Any]]:
        return [m for m in of_bar(self.sub.messages, bar_open_ms) if model in (None, m["model"])]


@asynccontextmanager
async def simulated_daemon(
    redis_url: str,
    redis: Any,
    registry: Path,
    config: SimulatorConfig | None = None,
    prepare: Callable[[Simulator], None] | None = None,
    **sections: Any,
) -> AsyncIterator[Running]:
    """Simulator (stepped by the test) -> daemon -> subscriber, all running.

    ``prepare`` runs on the simulator before the daemon starts (faults for its start-up).
    """
    async with Simulator(config or SimulatorConfig(bar_seconds=None, history_bars=120)) as sim:
        if prepare is not None:
            prepare(sim)
        settings = daemon_settings(sim, redis_url, registry, **sections)
        async with (
            Subscriber(redis, "wc:predictions") as sub,
            running_daemon(settings, redis) as daemon,
        ):
            yield Running(sim, daemon, sub)


async def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and body of a real HTTP GET to the daemon's metrics address."""
    import aiohttp

    url = f"http://127.0.0.1:{port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def scrape_running_daemon(redis_url: str, registry: Path, bars: int = 2) -> str:
    """``/metrics`` of a daemon that is warm and has predicted ``bars`` bars after start-up
    (the two v1 demo models and a volume and a direction horizon model)."""
    import redis.asyncio as aioredis

    write_demo_models(registry)
    for kind in ("volume", "direction"):  # the horizon outputs' live scores show too
        write_horizon_model(registry, f"{kind}-horizons", kind)
    models = ["direction", "volume", "volume-horizons", "direction-horizons"]
    per_series = 2 + len(VOLUME_HORIZONS) + len(DIRECTION_HORIZONS)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with simulated_daemon(
            redis_url, redis, registry, inference={"models": models}
        ) as run:
            await wait_until_ready(run.daemon)
            await run.step(bars)
            published = per_series * len(run.sim.symbols) * (bars + 1)
            await wait_until(lambda: len(run.sub.messages) == published, what="predictions")
            assert run.daemon.http is not None
            status, text = await http_get(run.daemon.http.port, "/metrics")
            assert status == 200
            return text
    finally:
        await redis.aclose()


@contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event logged inside the block, at any level, whatever the logging
    set-up of earlier tests (``structlog.testing.capture_logs`` keeps their level filter)."""
    saved = structlog.get_config()
    capture = LogCapture()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    try:
        yield capture.entries
    finally:
        structlog.configure(**saved)
