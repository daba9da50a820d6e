"""Helpers for the web page's tests: a running ``whalecast ui`` and predictions written
the way the daemon writes them (its own :class:`~inference.publisher.Publisher`)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from inference.publisher import PredictionOut, Publisher
from testkit.process import ROOT, serving_process
from whalecast.domain import Series
from whalecast.keys import Keys
from whalecast.metrics import Metrics
from whalecast.settings import Settings
from whalecast.ui.runner import UiRunner

HOUR_MS = 3_600_000
#: Renders as an image with an onerror handler if any string from Redis reached the DOM as HTML.
HOSTILE_SYMBOL = '<img src=x onerror="window.pwned=1">/"&USDT'


def ui_settings(settings: Settings, **ui: Any) -> Settings:
    """``settings`` with the UI on a free loopback port (and ``ui`` fields changed)."""
    changed = settings.ui.model_copy(update={"host": "127.0.0.1", "port": 0, **ui})
    return settings.model_copy(update={"ui": changed})


@contextlib.asynccontextmanager
async def running_ui(settings: Settings, redis: Any) -> AsyncIterator[UiRunner]:
    runner = await UiRunner(ui_settings(settings), redis).start()
    try:
        yield runner
    finally:
        await runner.stop()


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def publish(
    redis: Any,
    prefix: str,
    series: Sequence[Series],
    bar_open_ms: int,
    *,
    p_up: float = 0.61,
    volume: float = 1234.5,
) -> int:
    """Both models' predictions for ``series`` at one bar, through the daemon's publisher."""
    publisher = Publisher(redis, Keys(prefix), 100_000, Metrics(process=False))
    now = time.time()
    out = []
    for s in series:
        close_ms = bar_open_ms + s.bar_ms
        out.append(PredictionOut(s, bar_open_ms, close_ms, "direction", "20261122T060000Z-3f2a",
                                 "p_up_next_bar", p_up, now))  # fmt: skip
        out.append(PredictionOut(s, bar_open_ms, close_ms, "volume", "20261122T060000Z-3f2b",
                                 "next_bar_volume", volume, now))  # fmt: skip
    return await publisher.publish(out)


async def publish_horizons(redis: Any, prefix: str, series: Series, bar_open_ms: int) -> int:
    """A horizon model's six volume outputs for ``series`` at one bar (value 100 * h + q)."""
    publisher = Publisher(redis, Keys(prefix), 100_000, Metrics(process=False))
    one = PredictionOut(series, bar_open_ms, bar_open_ms + series.bar_ms, "volume-horizons",
                        "20261207T060000Z-7c1e", "volume_next_bars", 0.0, time.time())  # fmt: skip
    outputs = [(h, q) for h in (1, 6, 24) for q in (0.5, 0.9)]
    return await publisher.publish(
        [one._replace(value=100.0 * h + q, horizon_bars=h, quantile=q) for h, q in outputs]
    )


@contextlib.asynccontextmanager
async def ui_process(config: Path, port: int, log_path: Path) -> AsyncIterator[str]:
    """``python -m whalecast ui`` as a process of its own; yields the page's URL once it answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHALECAST_")}
    env["WHALECAST_SECRETS_DIR"] = "/nonexistent-whalecast-secrets"
    env["PYTHONPATH"] = str(ROOT)
    argv = [sys.executable, "-m", "whalecast", "ui", "--config", str(config), "--port", str(port)]
    url = f"http://127.0.0.1:{port}/"
    async with serving_process(argv, log_path, url + "healthz", env=env):
        yield url
