"""What an operator sees when the daemon is not (yet) ready: ``/readyz``'s body and the log
lines, over real HTTP from a real daemon (candle and whale feeds both count). The exchange unreachable and no model in the
registry; the start-up backfill not in yet; a series the exchange cannot fill a window
for; and the start-up summary line."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import redis.asyncio as aioredis

from inference.daemon import Daemon
from streamer.simulator import Simulator
from testkit.daemon import (
    captured_logs,
    http_get,
    running_daemon,
    simulated_daemon,
    write_demo_models,
)
from testkit.polling import wait_until, wait_until_true
from testkit.redis_servers import free_port
from whalecast.settings import load_settings

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

HOUR = 3_600_000
HOW_TO_GET_A_MODEL = (
    "train one into inference.registry with 'whalecast train' ('whalecast train --quick': "
    "small models from the shipped data in a few minutes), or watch the whole path with "
    "'whalecast demo'; a model trained later is picked up without a restart"
)


class Between:
    """Equal to an ISO 8601 UTC time (whole seconds) within ``[low, high]`` epoch seconds."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = int(low), high

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str) or not other.endswith("+00:00"):
            return False
        return self.low <= dt.datetime.fromisoformat(other).timestamp() <= self.high

    def __hash__(self) -> int:
        return hash((self.low, self.high))

    def __repr__(self) -> str:
        return f"<an ISO time between {self.low} and {self.high}>"


async def readyz(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    assert daemon.http is not None
    status, text = await http_get(daemon.http.port, "/readyz")
    return status, json.loads(text)


async def readyz_until(daemon: Daemon, what: str, check: Any) -> dict[str, Any]:
    """Poll /readyz until ``check(status, body)`` holds; that body."""
    seen: list[dict[str, Any]] = []

    async def shows() -> bool:
        status, body = await readyz(daemon)
        seen.append(body)
        return bool(check(status, body))

    await wait_until_true(shows, timeout_seconds=90, what=f"/readyz showing {what}")
    return seen[-1]


async def test_unreachable_exchange_and_no_model_are_named_with_since_when(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    rest = f"http://127.0.0.1:{port}/api/v3"
    exchange = {"id": "binance", "symbols": ["BTC/USDT"], "timeframe": "1h", "rest_url": rest,
                "ws_url": f"ws://127.0.0.1:{port}/stream", "enable_rate_limit": False}  # fmt: skip
    registry = tmp_path / "models"
    settings = load_settings(
        None, redis={"url": redis_url, "prefix": "wc"}, exchanges=[exchange],
        feed={"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2, "rest_retries": 0},
        whale={"enabled": False}, metrics={"port": 0},
        inference={"registry": str(registry), "models": ["direction", "volume"]},
    )  # fmt: skip
    started = time.time()
    with captured_logs() as logs:
        async with running_daemon(settings, redis_client) as daemon:
            await wait_until(lambda: daemon.feeds[0].facts().attempts >= 3, what="3 attempts")
            status, body = await readyz(daemon)
            now = time.time()
    tried = f"load markets and server time from {rest}"
    assert status == 503
    assert body == {
        "ready": False,
        "missing": ["feeds", "models", "windows"],
        "checks": {"feeds": False, "models": False, "windows": False},
        "since": dict.fromkeys(("feeds", "models", "windows"), Between(started, now)),
        "windows": {"series": 1, "complete": 0, "waiting": 1,
                    "waiting_series": ["binance:BTC/USDT:1h"], "unable": 0, "unable_series": []},
        "models": {"configured": ["direction", "volume"], "serving": {},
                   "missing": ["direction", "volume"], "registry": str(registry.resolve())},
        "feeds": [{"feed": "binance", "connected": False, "since": Between(started, now),
                   "down_seconds": ANY, "attempts": ANY, "last_tried": tried,
                   "last_error": ANY}],
    }  # fmt: skip
    feed = body["feeds"][0]
    assert 0 < feed["down_seconds"] <= now - started and feed["attempts"] >= 3
    assert feed["last_error"].startswith("ExchangeNotAvailable('binance GET ")
    assert f"{rest}/exchangeInfo" in feed["last_error"]

    no_model = [e for e in logs if e["event"].startswith("models not in service")]
    assert no_model == [{
        "event": "models not in service, predicting nothing for them",
        "models": ["direction", "volume"], "registry": str(registry.resolve()),
        "how_to_get_one": HOW_TO_GET_A_MODEL, "log_level": "error",
    }]  # fmt: skip
    failing = [e for e in logs if e["event"] == "exchange not reachable at start-up"]
    assert failing[2] == {
        "event": "exchange not reachable at start-up", "exchange": "binance", "tried": tried,
        "error": ANY, "failing_since": Between(started, now), "failed_attempts": 3,
        "retry_seconds": ANY, "log_level": "warning",
    }  # fmt: skip
    summary = [e for e in logs if e["event"] == "daemon started"]
    assert summary == [{
        "event": "daemon started", "exchanges": ["binance"], "series": 1, "shard": "0/1",
        "models": {}, "models_missing": ["direction", "volume"], "backend": "tf-function",
        "frameworks": ANY, "redis": redis_url, "metrics_port": daemon.http.port if daemon.http else ANY,
        "startup_seconds": ANY, "log_level": "info",
    }]  # fmt: skip


async def test_windows_gate_readiness_and_an_unfillable_series_is_named(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    versions = write_demo_models(registry)
    holed: list[str] = []

    def prepare(sim: Simulator) -> None:
        # REST backfill fails until cleared; and one series' exchange history has a hole
        # 5 to 10 bars back, so its window cannot be complete for a while
        sim.faults.rest_errors(100_000, 503, endpoint="klines")
        bars = [b[0] for b in sim.closed_bars(sim.symbols[0])]
        sim.faults.rest_gap(sim.symbols[0], bars[-10], bars[-5])
        holed.append(f"binance:{sim.symbols[0]}:{sim.timeframe}")

    started = time.time()
    with captured_logs() as logs:
        async with simulated_daemon(redis_url, redis_client, registry, prepare=prepare) as run:
            daemon = run.daemon
            tags = [s.tag for s in daemon.series]
            body = await readyz_until(daemon, "feeds connected", lambda _s, b: b["checks"]["feeds"])
            assert body["missing"] == ["windows"] and body["ready"] is False
            assert body["windows"] == {
                "series": len(tags), "complete": 0, "waiting": len(tags), "waiting_series": tags,
                "unable": 0, "unable_series": [],
            }  # fmt: skip
            assert body["since"] == {"windows": Between(started, time.time())}
            run.sim.faults.clear_rest_errors()  # the backfill comes in
            body = await readyz_until(daemon, "ready", lambda status, _b: status == 200)
            _rows, complete = daemon.store.windows(daemon.series)
            now = time.time()
    assert [t for t, c in zip(tags, complete, strict=True) if not c] == holed
    assert body["windows"] == {
        "series": len(tags), "complete": len(tags) - 1, "waiting": 0, "waiting_series": [],
        "unable": 1, "unable_series": [{
            "series": holed[0], "since": Between(started, now),
            "reason": "every bar the exchange has is in, fewer than the window needs"}],
    }  # fmt: skip
    assert body["models"]["serving"] == versions and body["missing"] == []
    assert [(f["feed"], f["connected"]) for f in body["feeds"]] == [
        ("binance", True), ("whale", True)
    ]  # fmt: skip
    summary = [e for e in logs if e["event"] == "daemon started"]
    assert summary == [{
        "event": "daemon started", "exchanges": ["binance"], "series": len(tags),
        "shard": "0/1", "models": versions, "models_missing": [], "backend": "tf-function",
        "frameworks": ANY, "redis": redis_url, "metrics_port": ANY, "startup_seconds": ANY, "log_level": "info",
    }]  # fmt: skip
    assert 0 < summary[0]["startup_seconds"] < now - started
