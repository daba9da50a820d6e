"""The real ccxt clients (ccxt.pro.bybit, ccxt.pro.okx) against the simulator's Bybit v5
and OKX v5 protocols: markets and time, REST paging in each exchange's direction, rate
limits, closed flags on the websocket, keepalive, subscription limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import ccxt
import pytest

from streamer.exchange import ExchangeAdapter, retry_after_seconds
from streamer.simulator import Simulator, SimulatorConfig
from testkit.polling import wait_until
from testkit.simulator import csv_rows
from tests.feed_helpers import exchange_settings, feed_settings, start_feed, truth, wait_subscribed

HOUR = 3_600_000
EXCHANGES = ("bybit", "okx")


@pytest.fixture(params=EXCHANGES)
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(history_bars=1500, whale=False, exchanges=(request.param,))
    async with Simulator(config) as simulator:
        yield simulator


def adapter(sim: Simulator, **overrides: Any) -> ExchangeAdapter:
    return ExchangeAdapter(exchange_settings(sim, **overrides), feed_settings())


@pytest.fixture
async def rest(sim: Simulator) -> AsyncIterator[Any]:
    client = adapter(sim).rest_client()
    yield client
    await client.close()


async def test_markets_and_server_time(sim: Simulator, rest: Any) -> None:
    markets = await rest.load_markets()
    assert sorted(markets) == ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
    assert markets["BTC/USDT"]["id"] == {"bybit": "BTCUSDT", "okx": "BTC-USDT"}[sim.exchange]
    assert markets["BTC/USDT"]["spot"]
    assert await rest.fetch_time() == sim.now_ms


async def test_forward_pages_in_the_exchanges_direction_equal_the_csv(
    sim: Simulator, rest: Any
) -> None:
    made = adapter(sim)
    await made.load_markets(rest)
    expected = csv_rows("binance_ETH-USDT_1h.csv.gz")[:1500]
    page, since, fetched = made.rest_limit, expected[0][0], []
    while since <= sim.now_ms:
        params = made.page_params(since, page, HOUR)
        rows = await rest.fetch_ohlcv("ETH/USDT", "1h", since=since, limit=page, params=params)
        assert rows and rows[0][0] == since  # each page starts where it was asked to
        fetched += rows
        since = rows[-1][0] + HOUR
    assert [r for r in fetched if r[0] < sim.now_ms] == expected
    assert fetched[-1][0] == sim.now_ms  # the forming bar is served too


async def test_an_unbounded_page_is_the_newest_one(sim: Simulator, rest: Any) -> None:
    """Why the feed bounds its pages: both exchanges answer the newest bars of a range."""
    await rest.load_markets()
    first = csv_rows("binance_BTC-USDT_1h.csv.gz")[0][0]
    if sim.exchange == "bybit":  # start alone: the newest 1000 bars up to now
        rows = await rest.fetch_ohlcv("BTC/USDT", "1h", since=first, limit=1000)
        assert rows[-1][0] == sim.now_ms and rows[0][0] == sim.now_ms - 999 * HOUR
    else:  # 300 asked from history-candles: the newest 100 of those 300
        rows = await rest.fetch_ohlcv("BTC/USDT", "1h", since=first, limit=300)
        assert [r[0] for r in rows] == [first + k * HOUR for k in range(200, 300)]


@pytest.mark.parametrize("status", [429, 418])
async def test_rate_limits_answer_in_the_exchanges_terms(
    sim: Simulator, rest: Any, status: int
) -> None:
    await rest.load_markets()
    sim.faults.rest_errors(1, status=status, retry_after=30, endpoint="klines")
    with pytest.raises(ccxt.RateLimitExceeded):
        await rest.fetch_ohlcv("BTC/USDT", "1h", since=sim.now_ms - 5 * HOUR, limit=5)
    hint = retry_after_seconds(rest)
    if sim.exchange == "bybit" and status == 429:  # retCode 10006 + the reset timestamp
        assert hint is not None and 25 < hint <= 30
    else:  # Bybit's IP limit (403) and OKX's 50011 say nothing: the feed backs off
        assert hint is None
    assert sim.faults.counters[f"rest_errors:{status}"] == 1
    assert len(await rest.fetch_ohlcv("BTC/USDT", "1h", since=sim.now_ms - 5 * HOUR, limit=5)) == 5


class Recording:
    """Keeps every raw candle message a ccxt.pro client handles."""

    raw: list[Any]

    def handle_ohlcv(self, client: Any, message: Any) -> None:
        self.raw.append(message)
        super().handle_ohlcv(client, message)  # type: ignore[misc]


def recording_client(sim: Simulator, **config: Any) -> Any:
    made = adapter(sim)
    base = getattr(ccxt.pro, sim.exchange)
    client = type("Recording", (Recording, base), {})({**made._config(), **config})
    client.raw = []
    made.venue.set_urls(client.urls["api"], sim.rest_url, sim.ws_url)
    return client


def closed_flags(sim: Simulator, raw: list[Any]) -> list[tuple[int, bool]]:
    if sim.exchange == "bybit":
        return [(d["start"], d["confirm"]) for m in raw for d in m["data"]]
    return [(int(c[0]), c[8] == "1") for m in raw for c in m["data"]]


async def test_closed_flag_on_the_last_update_of_each_candle(sim: Simulator) -> None:
    client = recording_client(sim)
    try:
        await client.load_markets()
        watch = asyncio.create_task(client.watch_ohlcv("BTC/USDT", "1h"))
        await wait_subscribed(sim, 1)
        start = sim.now_ms
        assert await sim.advance(2) == 2
        await asyncio.wait_for(watch, 10)
        await wait_until(lambda: len(client.raw) == 6)  # two forming updates and the close, twice
        flags = closed_flags(sim, client.raw)
        assert flags == [
            (start + k * HOUR, last) for k in range(2) for last in (False, False, True)
        ]
        cached = [list(r) for r in client.ohlcvs["BTC/USDT"]["1h"][-2:]]
        assert cached == [list(r) for r in sim.closed_bars("BTC/USDT")[-2:]]
    finally:
        await client.close()


@pytest.mark.slow  # waits out the exchanges' idle timeouts in real time
@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_text_pings_keep_an_idle_connection_and_silence_loses_it(exchange: str) -> None:
    config = SimulatorConfig(history_bars=60, whale=False, exchanges=(exchange,),
                             idle_seconds={exchange: 1.0})  # fmt: skip
    async with Simulator(config) as sim:
        pinging = recording_client(sim)
        silent = recording_client(sim)
        pinging.streaming["keepAlive"] = 300  # ms between ccxt's text pings
        silent.streaming["keepAlive"] = 60_000
        try:
            watches = [
                asyncio.create_task(c.watch_ohlcv("BTC/USDT", "1h")) for c in (pinging, silent)
            ]
            await wait_subscribed(sim, 2)
            await wait_until(lambda: sim.faults.counters["exchange_idle_closed"] == 1, 10)
            with pytest.raises(ccxt.NetworkError):
                await asyncio.wait_for(watches[1], 5)
            pings = sim.faults.counters["exchange_pings"]  # 8 more: over twice the idle limit
            await wait_until(lambda: sim.faults.counters["exchange_pings"] >= pings + 8, 20)
            assert len(sim.stream.hub) == 1 and sim.faults.counters["exchange_idle_closed"] == 1
            await sim.advance()
            await asyncio.wait_for(watches[0], 10)
        finally:
            await asyncio.gather(pinging.close(), silent.close())


async def test_bybit_subscribes_ten_topics_per_message() -> None:
    config = SimulatorConfig(synthetic=23, synthetic_bars=120, history_bars=60, whale=False,
                             exchanges=("bybit",))  # fmt: skip
    async with Simulator(config) as sim:
        client = recording_client(sim)
        try:  # ccxt's own watch_ohlcv_for_symbols sends all 23 at once: refused
            await client.load_markets()
            with pytest.raises(ccxt.ExchangeError, match="args size"):
                await asyncio.wait_for(
                    client.watch_ohlcv_for_symbols([[s, "1h"] for s in sim.symbols]), 10
                )
        finally:
            await client.close()
        running = await start_feed(sim, warmup_bars=1)  # the feed: three messages
        try:
            await wait_until(lambda: all(len(running.delivered(s)) == 1 for s in sim.symbols))
            await wait_subscribed(sim)
            await sim.advance()
            await wait_until(lambda: all(len(running.delivered(s)) == 2 for s in sim.symbols))
            for symbol in sim.symbols:
                assert running.rows(symbol) == truth(sim, symbol)[-2:]
            assert sim.faults.counters["exchange_too_many_streams"] == 1  # ccxt's, above
        finally:
            await running.stop()
