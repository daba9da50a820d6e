"""Graceful shutdown while a bar waits for its grace: what arrived is predicted and
published, then the daemon stops; ``whalecast run`` does the same on SIGTERM and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from inference.daemon import Daemon
from streamer.simulator import Simulator, SimulatorConfig
from testkit.daemon import (
    Subscriber,
    captured_logs,
    daemon_config,
    daemon_settings,
    of_bar,
    wait_until_ready,
    write_demo_models,
)
from testkit.polling import wait_until
from whalecast.domain import Series
from whalecast.keys import Keys
from whalecast.metrics import Metrics

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
HELD = "BTC/USDT"  # its close is held back, so the bar waits for the grace
GRACE = 30.0  # the bar loop's wait: far longer than the test
SHUTDOWN_GRACE = 10.0


async def bar_waiting(redis: aioredis.Redis, sim: Simulator, bar: int) -> None:
    """Until every series but the held one has stored ``bar`` (the loop now waits for it)."""
    keys = Keys("wc")

    async def stored() -> list[bytes | None]:
        return [
            await redis.hget(keys.meta(Series("binance", s, "1h")), "last_open_ms")
            for s in sim.symbols
            if s != HELD
        ]

    for _ in range(400):
        if await stored() == [str(bar).encode()] * (len(sim.symbols) - 1):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"bar {bar} was not stored for the series that closed it")


async def test_stop_mid_bar_publishes_what_arrived(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    write_demo_models(registry)
    async with (
        Simulator(SimulatorConfig(bar_seconds=None, history_bars=120)) as sim,
        Subscriber(redis_client, "wc:predictions") as sub,
    ):
        settings = daemon_settings(
            sim, redis_url, registry, feed={"grace_seconds": GRACE},
            inference={"shutdown_grace_seconds": SHUTDOWN_GRACE},
        )  # fmt: skip
        daemon = Daemon(settings, Metrics(), redis_client)
        await daemon.start()
        try:
            await wait_until_ready(daemon)
            bar = sim.now_ms
            sim.faults.delay_close(HELD, 3600.0)
            await sim.advance()
            await bar_waiting(redis_client, sim, bar)
            assert not of_bar(sub.messages, bar)
        finally:
            started = time.monotonic()
            with captured_logs() as logs:
                drained = await daemon.stop()
            took = time.monotonic() - started
        await wait_until(lambda: len(of_bar(sub.messages, bar)) == 2 * 3, 5, "the drained bar")

    assert drained and took < SHUTDOWN_GRACE
    assert {m["symbol"] for m in of_bar(sub.messages, bar)} == set(sim.symbols) - {HELD}
    stopped = [e for e in logs if e["event"] == "daemon stopped"]
    assert stopped == [{"event": "daemon stopped", "drained": True, "log_level": "info"}]


async def _read_lines(stream: asyncio.StreamReader, into: list[dict[str, Any]]) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").strip()
        try:
            into.append(json.loads(text))
        except ValueError:
            into.append({"event": text})


async def test_whalecast_run_drains_and_exits_0_on_sigterm(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    write_demo_models(registry)
    logs: list[dict[str, Any]] = []
    async with (
        Simulator(SimulatorConfig(bar_seconds=None, history_bars=120)) as sim,
        Subscriber(redis_client, "wc:predictions") as sub,
    ):
        config = daemon_config(
            sim, redis_url, registry, log={"level": "INFO", "format": "json"},
            feed={"grace_seconds": GRACE},
            inference={"shutdown_grace_seconds": SHUTDOWN_GRACE},
        )  # fmt: skip
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(config))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "whalecast", "run", "--config", str(path),
            cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stderr is not None
        reader = asyncio.create_task(_read_lines(process.stderr, logs))
        try:
            # the bar that had just closed at start-up is predicted once the windows are warm
            await wait_until(lambda: len(sub.messages) == 2 * len(sim.symbols), 120, "warm-up")
            bar = sim.now_ms
            sim.faults.delay_close(HELD, 3600.0)
            await sim.advance()
            await bar_waiting(redis_client, sim, bar)
            assert not of_bar(sub.messages, bar)

            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = await asyncio.wait_for(process.wait(), SHUTDOWN_GRACE + 5)
            took = time.monotonic() - started
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, 5)
        await wait_until(lambda: len(of_bar(sub.messages, bar)) == 2 * 3, 5, "the drained bar")

    assert code == 0, [e.get("event") for e in logs][-20:]
    assert took < SHUTDOWN_GRACE
    assert {m["symbol"] for m in of_bar(sub.messages, bar)} == set(sim.symbols) - {HELD}
    stopped = [e for e in logs if e.get("event") == "daemon stopped"]
    assert len(stopped) == 1 and stopped[0]["drained"] is True
