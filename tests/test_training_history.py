"""History over ccxt REST against the exchange simulator: pages, cache, closed bars only."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamer.simulator import Simulator, SimulatorConfig
from testkit.simulator import csv_rows
from training.history import cache_path, from_rest, rest_client, update_cache
from whalecast.domain import Series
from whalecast.settings import ExchangeSettings

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3_600_000
HISTORY = 1500


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(SimulatorConfig(history_bars=HISTORY, whale=False))
    await simulator.start()
    yield simulator
    await simulator.stop()


def exchange(sim: Simulator, symbols: list[str]) -> ExchangeSettings:
    return ExchangeSettings(
        id="binance", symbols=symbols, rest_url=sim.rest_url, enable_rate_limit=False
    )


async def test_rest_history_is_paged_closed_and_equal_to_the_exchange(
    sim: Simulator, tmp_path: Path
) -> None:
    settings = exchange(sim, ["BTC/USDT", "ETH/USDT"])
    histories = await asyncio.to_thread(
        from_rest, [settings], history_days=HISTORY / 24 + 30, cache_dir=tmp_path
    )
    assert [h.series.tag for h in histories] == ["binance:BTC/USDT:1h", "binance:ETH/USDT:1h"]
    for h, name in zip(histories, ("BTC", "ETH"), strict=True):
        expected = np.asarray(csv_rows(f"binance_{name}-USDT_1h.csv.gz")[:HISTORY])
        got = h.bars[["open_ms", "open", "high", "low", "close", "volume"]].to_numpy()
        assert got.shape == expected.shape  # two pages of <= 1000, the forming bar left out
        assert np.allclose(got, expected)
        assert h.last_ms + HOUR == sim.now_ms
        assert cache_path(tmp_path, h.series).is_file()


async def test_rerun_fetches_only_new_bars_and_reaches_back_when_asked(
    sim: Simulator, tmp_path: Path
) -> None:
    client = rest_client(exchange(sim, ["SOL/USDT"]))
    series = Series("binance", "SOL/USDT", "1h")
    since = sim.now_ms - 500 * HOUR
    path, fetched = await asyncio.to_thread(update_cache, client, series, since, tmp_path)
    assert fetched == 500
    await sim.advance(30)
    before = sim.faults.counters["rest_requests"]
    path, fetched = await asyncio.to_thread(update_cache, client, series, since, tmp_path)
    assert fetched == 30
    assert sim.faults.counters["rest_requests"] - before <= 3  # time + one klines page (+ markets)
    path, fetched = await asyncio.to_thread(
        update_cache, client, series, since - 200 * HOUR, tmp_path
    )
    assert fetched == 200  # only the older bars the cache lacked
    cached = pd.read_csv(path)
    assert len(cached) == 730
    assert cached["timestamp_ms"].is_monotonic_increasing and cached["timestamp_ms"].is_unique
    assert cached["timestamp_ms"].iloc[-1] + HOUR == sim.now_ms  # never the forming bar
    expected = [r for r in csv_rows("binance_SOL-USDT_1h.csv.gz") if r[0] >= since - 200 * HOUR]
    assert np.allclose(cached.to_numpy(), np.asarray(expected[:730]))


async def test_rate_limit_answers_are_retried(sim: Simulator, tmp_path: Path) -> None:
    client = rest_client(exchange(sim, ["XRP/USDT"]))
    series = Series("binance", "XRP/USDT", "1h")
    await asyncio.to_thread(client.load_markets)
    sim.faults.rest_errors(2, status=429, retry_after=0)
    _, fetched = await asyncio.to_thread(
        update_cache, client, series, sim.now_ms - 48 * HOUR, tmp_path
    )
    assert fetched == 48
    assert sim.faults.counters["rest_errors:429"] == 2


@pytest.mark.tf
@pytest.mark.training
async def test_train_command_fetches_over_rest_and_trains(sim: Simulator, tmp_path: Path) -> None:
    """``whalecast train`` with no CSV files: every configured series comes over REST."""
    config = tmp_path / "config.yml"
    config.write_text(
        "log: {format: json}\n"
        "redis: {url: 'redis://127.0.0.1:1/0', socket_timeout_seconds: 0.5}\n"
        f"exchanges: [{{id: binance, symbols: [BTC/USDT, ETH/USDT], rest_url: '{sim.rest_url}',"
        " enable_rate_limit: false}]\n"
        f"inference: {{registry: {tmp_path / 'models'}}}\n"
        f"training: {{history_days: 100, cache_dir: {tmp_path / 'cache'}, test_days: 10,"
        " bootstrap_samples: 20, presets: {volume: {units: 2, epochs: 1}}}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "whalecast", "train", "-c", str(config), "--preset", "volume",
        "--no-promote", cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    meta = json.loads((Path(summary["directory"]) / "metadata.json").read_text())
    sources = {s["series"]: s for s in meta["data"]["series"]}
    assert set(sources) == {"binance:BTC/USDT:1h", "binance:ETH/USDT:1h"}
    for s in sources.values():
        assert s["source"] == "rest:binance" and s["bars"] == HISTORY
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "binance_BTC-USDT_1h.csv",
        "binance_ETH-USDT_1h.csv",
    ]
