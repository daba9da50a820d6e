"""The simulator's virtual clock, synthetic series and end of history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from streamer.simulator import Simulator, SimulatorConfig
from streamer.simulator.data import load_candles, symbol_from_path, synthetic_series
from testkit.polling import wait_until

HOUR = 3_600_000


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def klines(session: aiohttp.ClientSession, sim: Simulator, symbol: str) -> list[list[object]]:
    params = {"symbol": symbol, "interval": sim.timeframe, "limit": "1000"}
    async with session.get(sim.rest_url + "/klines", params=params) as response:
        assert response.status == 200
        rows: list[list[object]] = await response.json()
        return rows


async def test_running_clock_paces_bars_and_forming_updates(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(bar_seconds=0.25, history_bars=10, whale=False, forming_updates=3)
    async with Simulator(config) as sim:
        ws = await session.ws_connect(sim.ws_url + "/1")
        await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h"], "id": 7})
        start = sim.now_ms
        events = []
        loop = asyncio.get_running_loop()
        began = loop.time()
        while len([e for e in events if e[1]["k"]["x"]]) < 3:
            message = await ws.receive_json(timeout=5)
            if "k" in message:
                events.append((loop.time() - began, message))
        elapsed = loop.time() - began
        await ws.close()
    assert 0.5 < elapsed < 2.0  # three bars at 0.25 s each (plus scheduling slack)
    bars = [e for e in events if e[1]["k"]["x"]]
    assert [m["k"]["t"] for _, m in bars][-2:] == [
        bars[-1][1]["k"]["t"] - HOUR,
        bars[-1][1]["k"]["t"],
    ]
    assert bars[0][1]["k"]["t"] >= start - HOUR
    forming = [m for _, m in events if not m["k"]["x"] and m["k"]["t"] == bars[-1][1]["k"]["t"]]
    assert len(forming) == 3
    volumes = [float(m["k"]["v"]) for m in forming] + [float(bars[-1][1]["k"]["v"])]
    assert volumes == sorted(volumes) and volumes[0] < volumes[-1]  # the bar fills up
    assert [m["E"] for m in forming] == sorted(m["E"] for m in forming)


async def test_forming_bar_on_rest_follows_the_clock(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(bar_seconds=4.0, history_bars=10, whale=False, forming_updates=3)
    async with Simulator(config) as sim:
        open_ms = sim.now_ms
        # the first forming update (a quarter of the bar) goes out at 1 s, the next at 2 s
        await wait_until(lambda: sim.now_ms >= open_ms + HOUR // 4, what="the first update")
        rows = await klines(session, sim, "ETHUSDT")
        async with session.get(sim.rest_url + "/time") as response:
            server_time = (await response.json())["serverTime"]
    full = load_candles(_eth(), HOUR)
    assert server_time == open_ms + HOUR // 4  # virtual time moves in steps of the updates
    assert len(rows) == 11 and rows[-1][0] == open_ms
    assert float(str(rows[-1][5])) == round(float(full.volume[10]) / 4, 8)
    assert [float(str(x)) for x in rows[-2][1:6]] == list(sim.closed_bars("ETH/USDT")[-1][1:])


def _eth() -> Path:
    return Path(__file__).resolve().parents[1] / "streamer/data/binance_ETH-USDT_1h.csv.gz"


async def test_history_end_stops_and_reports_finished(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    path = tmp_path / "binance_ABC-USDT_1h.csv"
    rows = [(1_700_000_000_000 - 1_700_000_000_000 % HOUR + k * HOUR, 10 + k, 12 + k, 9 + k, 11 + k, 5.5)
            for k in range(5)]  # fmt: skip
    path.write_text(
        "timestamp_ms,open,high,low,close,volume\n" + "\n".join(",".join(map(str, r)) for r in rows)
    )
    async with Simulator(SimulatorConfig(data=(path,), history_bars=2, whale=False)) as sim:
        assert sim.symbols == ["ABC/USDT"]
        assert await sim.advance(bars=10) == 3
        assert sim.finished and await sim.advance() == 0
        served = await klines(session, sim, "ABCUSDT")
        async with session.get(sim.base_url + "/_sim/state") as response:
            state = await response.json()
    assert [r[0] for r in served] == [
        r[0] for r in rows
    ]  # all closed, nothing forming after the end
    assert [tuple(r) for r in sim.closed_bars("ABC/USDT")] == [tuple(map(float, r)) for r in rows]
    assert state["finished"] is True and state["bars_played"] == 3


def test_start_ms_picks_the_first_forming_bar() -> None:
    first = int(load_candles(_eth(), HOUR).open_ms[0])
    sim = Simulator(SimulatorConfig(start_ms=first + 50 * HOUR + 123, whale=False))
    assert sim.now_ms == first + 50 * HOUR
    assert len(sim.closed_bars("BTC/USDT")) == 50


def test_symbol_names_from_file_names() -> None:
    assert symbol_from_path(Path("binance_BTC-USDT_1h.csv.gz")) == "BTC/USDT"
    assert symbol_from_path(Path("/x/sol-usdt.csv")) == "SOL/USDT"
    with pytest.raises(ValueError, match="symbol"):
        symbol_from_path(Path("prices.csv"))


def test_synthetic_series_are_deterministic_and_valid() -> None:
    one = synthetic_series(50, "5m", seed=3, bars=300)
    two = synthetic_series(50, "5m", seed=3, bars=300)
    other = synthetic_series(50, "5m", seed=4, bars=300)
    assert [b.symbol for b in one][:2] == ["S0001/USDT", "S0002/USDT"]
    assert all(np.array_equal(a.close, b.close) for a, b in zip(one, two, strict=True))
    assert not np.array_equal(one[0].close, other[0].close)
    for b in one:
        assert np.all(np.diff(b.open_ms) == 300_000) and b.open_ms[0] % 300_000 == 0
        assert np.all(b.low > 0) and np.all(b.volume > 0)
        assert np.all(b.low <= np.minimum(b.open, b.close)) and np.all(
            b.high >= np.maximum(b.open, b.close)
        )


async def test_synthetic_mode_serves_many_symbols_and_stablecoin_alerts(
    session: aiohttp.ClientSession,
) -> None:
    config = SimulatorConfig(synthetic=300, synthetic_bars=200, timeframe="1h", history_bars=50,
                             whale_api_key="k")  # fmt: skip
    async with Simulator(config) as sim:
        async with session.get(sim.rest_url + "/exchangeInfo") as response:
            info = await response.json()
        assert len(info["symbols"]) == 300 and info["symbols"][299]["symbol"] == "S0300USDT"
        whale = await session.ws_connect(f"{sim.whale_url}?api_key=k")
        await whale.send_json({"type": "subscribe_alerts", "symbols": ["usdt"], "min_value_usd": 0})
        assert (await whale.receive_json(timeout=5))["type"] == "subscribed_alerts"
        await sim.advance(bars=24)
        alerts = []
        while True:
            try:
                alerts.append(json.loads((await whale.receive(timeout=0.3)).data))
            except TimeoutError:
                break
        await whale.close()
    assert alerts and all(a["amounts"][0]["symbol"] == "USDT" for a in alerts)
    outputs = [a["transaction"]["sub_transactions"][0]["outputs"][0]["owner_type"] for a in alerts]
    assert set(outputs) == {"exchange"}  # stablecoin inflows to exchanges
