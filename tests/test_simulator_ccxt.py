"""The real ccxt client (ccxt.pro.binance) against the exchange simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import ccxt
import pytest

from streamer.simulator import Simulator, SimulatorConfig
from testkit.simulator import RecordingBinance, binance_client, csv_rows

HOUR = 3_600_000


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(SimulatorConfig(history_bars=1500, whale=False))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[RecordingBinance]:
    exchange = binance_client(sim)
    yield exchange
    await exchange.close()


async def test_load_markets_and_server_time(sim: Simulator, client: RecordingBinance) -> None:
    markets = await client.load_markets()
    assert sorted(markets) == ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
    assert markets["BTC/USDT"]["id"] == "BTCUSDT" and markets["BTC/USDT"]["spot"]
    assert await client.fetch_time() == sim.now_ms  # the virtual clock, not the wall clock
    assert sim.now_ms == csv_rows("binance_BTC-USDT_1h.csv.gz")[1500][0]


async def test_paginated_fetch_equals_csv_and_marks_forming_bar(
    sim: Simulator, client: RecordingBinance
) -> None:
    expected = csv_rows("binance_ETH-USDT_1h.csv.gz")[:1500]
    fetched: list[list[float]] = []
    since = expected[0][0]
    while True:
        page = await client.fetch_ohlcv("ETH/USDT", "1h", since=since, limit=1000)
        fetched += page
        if len(page) < 1000:
            break
        since = page[-1][0] + HOUR
    assert len(fetched) == 1501  # 1500 closed bars + the forming one, in 2 pages
    closed = [row for row in fetched if row[0] < sim.now_ms]
    assert closed == expected
    assert [list(r) for r in sim.closed_bars("ETH/USDT")] == expected
    forming = fetched[-1]
    assert forming[0] == sim.now_ms  # the current bar is served, still forming
    assert forming[0] + HOUR > sim.now_ms
    # nothing from the future, whatever the client asks for
    later = await client.fetch_ohlcv("ETH/USDT", "1h", since=sim.now_ms + HOUR, limit=10)
    assert later == []


async def test_watch_receives_forming_then_closed_bars(
    sim: Simulator, client: RecordingBinance
) -> None:
    symbols = sim.symbols
    watch = asyncio.create_task(client.watch_ohlcv_for_symbols([[s, "1h"] for s in symbols]))
    await _until(lambda: any(c.streams for c in sim.stream.hub.connections.values()))
    start = sim.now_ms
    assert await sim.advance(bars=3) == 3
    await asyncio.wait_for(watch, 10)
    await _until(lambda: len(client.closed_events()) == 3 * len(symbols))
    assert len(sim.stream.hub) == 1  # one SUBSCRIBE for all symbols on one connection
    expected = [(s.replace("/", ""), start + k * HOUR) for k in range(3) for s in symbols]
    assert client.closed_events() == expected
    forming = [m for m in client.raw_klines if m["k"]["x"] is False]
    assert len(forming) == 2 * 3 * len(symbols)  # two forming updates per bar by default
    assert all(m["k"]["T"] == m["k"]["t"] + HOUR - 1 for m in client.raw_klines)
    # the unified cache holds the closed values, equal to the ground truth
    btc = client.ohlcvs["BTC/USDT"]["1h"]
    assert [list(r) for r in sim.closed_bars("BTC/USDT")[-3:]] == [list(r) for r in btc[-3:]]


async def test_forced_drop_raises_network_error_then_reconnects(
    sim: Simulator, client: RecordingBinance
) -> None:
    pairs = [[s, "1h"] for s in sim.symbols]
    first = asyncio.create_task(client.watch_ohlcv_for_symbols(pairs))
    await _until(lambda: len(sim.stream.hub) == 1)
    await sim.advance()
    await asyncio.wait_for(first, 10)
    await _until(lambda: len(client.closed_events()) == len(sim.symbols))
    while True:  # drain what ccxt buffered until a watch really waits
        pending = asyncio.create_task(client.watch_ohlcv_for_symbols(pairs))
        await asyncio.sleep(0.25)  # generous: on a loaded machine a buffered reply is slow too
        if not pending.done():
            break
        await asyncio.wait_for(pending, 10)
    assert await asyncio.wait_for(sim.faults.drop_connections(), 10) == 1
    with pytest.raises(ccxt.NetworkError):
        await asyncio.wait_for(pending, 5)
    assert sim.faults.counters["exchange_dropped"] == 1
    again = asyncio.create_task(client.watch_ohlcv_for_symbols(pairs))
    await _until(lambda: any(c.streams for c in sim.stream.hub.connections.values()))
    await sim.advance()
    await asyncio.wait_for(again, 10)
    await _until(lambda: len(client.closed_events()) == 2 * len(sim.symbols))
    assert sim.faults.counters["exchange_connections"] == 2


async def _until(predicate: object, within: float = 20.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
