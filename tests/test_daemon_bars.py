"""The bar loop through the running daemon: series not ready are skipped and counted,
a series whose close comes after the grace gets its own later batch."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from streamer.simulator import Simulator, SimulatorConfig
from streamer.simulator.data import shipped_candle_files
from testkit.daemon import metric, simulated_daemon, wait_until_ready, write_demo_models
from testkit.polling import wait_until
from testkit.simulator import csv_rows
from whalecast.domain import Series

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

HOUR = 3_600_000
HISTORY = 120  # bars closed when the replay starts


def late_listing(directory: Path, name: str, bars_before_start: int) -> Path:
    """A copy of a shipped series that starts ``bars_before_start`` bars before the replay."""
    rows = csv_rows(name)
    start = rows[0][0] + HISTORY * HOUR
    path = directory / name.removesuffix(".gz")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp_ms", "open", "high", "low", "close", "volume"])
        writer.writerows(r for r in rows if r[0] >= start - bars_before_start * HOUR)
    return path


async def test_series_without_a_complete_window_get_no_prediction(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    files = [p for p in shipped_candle_files() if "SOL" not in p.name]
    files.append(late_listing(tmp_path, "binance_SOL-USDT_1h.csv.gz", bars_before_start=10))
    config = SimulatorConfig(data=tuple(files), bar_seconds=None, history_bars=HISTORY)
    registry = tmp_path / "registry"
    write_demo_models(registry)

    def hole(sim: Simulator) -> None:
        """REST shows no bar 6 hours back for XRP: the exchange never had it."""
        sim.faults.rest_gap("XRP/USDT", sim.now_ms - 6 * HOUR, sim.now_ms - 5 * HOUR)

    async with simulated_daemon(redis_url, redis_client, registry, config, hole) as run:
        daemon = run.daemon
        ready = [Series("binance", s, "1h") for s in ("BTC/USDT", "ETH/USDT")]
        await wait_until_ready(daemon, series=ready)
        _w, mask = daemon.store.windows(daemon.series)
        assert dict(zip(daemon.series, mask.tolist(), strict=True)) == {
            **dict.fromkeys(ready, True),
            Series("binance", "SOL/USDT", "1h"): False,
            Series("binance", "XRP/USDT", "1h"): False,
        }
        bars = [run.sim.now_ms - HOUR, run.sim.now_ms, run.sim.now_ms + HOUR]
        await run.step(2)
        await wait_until(lambda: all(len(run.of_bar(b)) == 2 * 2 for b in bars), what="3 bars")
        processed = metric(daemon, "whalecast_bars_processed_total", timeframe="1h")
        not_ready = metric(daemon, "whalecast_series_not_ready_total", timeframe="1h")
        assert processed == 3 and not_ready == 2 * 3
        assert metric(daemon, "whalecast_series_ready", timeframe="1h") == 2
        missing = metric(daemon, "whalecast_bars_missing_total", exchange="binance", timeframe="1h")
        assert missing is not None and missing >= 1

    assert {m["symbol"] for m in run.sub.messages} == {"BTC/USDT", "ETH/USDT"}
    per_key = Counter((m["symbol"], m["model"], m["bar_open_ms"]) for m in run.sub.messages)
    assert set(per_key.values()) == {1} and len(per_key) == 2 * 2 * 3
    latest = await redis_client.hkeys("wc:latest:direction")
    assert sorted(latest) == [b"binance:BTC/USDT:1h", b"binance:ETH/USDT:1h"]


async def test_a_series_closing_after_the_grace_gets_its_own_later_batch(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    write_demo_models(registry)
    delay = 2.0
    async with simulated_daemon(
        redis_url, redis_client, registry, feed={"grace_seconds": 0.3}
    ) as run:
        daemon = run.daemon
        await wait_until_ready(daemon)
        bar = run.sim.now_ms
        run.sim.faults.delay_close("BTC/USDT", delay)
        await run.step()
        await wait_until(lambda: len(run.of_bar(bar)) == 2 * 3, what="the main batch")
        assert not [m for m in run.of_bar(bar) if m["symbol"] == "BTC/USDT"]
        await wait_until(lambda: len(run.of_bar(bar)) == 2 * 4, what="the late batch")
        assert metric(daemon, "whalecast_series_late_total", timeframe="1h") == 1
        # the next bar is whole again
        following = run.sim.now_ms
        await run.step()
        await wait_until(lambda: len(run.of_bar(following)) == 2 * 4, what="the next bar")
        assert metric(daemon, "whalecast_series_late_total", timeframe="1h") == 1

    messages = run.of_bar(bar)
    per_key = Counter((m["symbol"], m["model"]) for m in messages)
    assert set(per_key.values()) == {1}, "each series and model once"
    late = [m for m in messages if m["symbol"] == "BTC/USDT"]
    main = [m for m in messages if m["symbol"] != "BTC/USDT"]
    assert len(late) == 2 and len(main) == 6
    # the main batch did not wait for the late series; the late one came about `delay` later
    assert max(m["published_ms"] for m in main) + 1000 * (delay - 0.3) / 2 < min(
        m["published_ms"] for m in late
    )
    assert all(m["bar_close_ms"] == bar + HOUR for m in messages)
