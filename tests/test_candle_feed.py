"""The candle feed with the real ccxt client against the exchange simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streamer.simulator import Simulator, SimulatorConfig
from testkit.polling import wait_until
from tests.feed_helpers import feed_settings, start_feed, truth, wait_subscribed
from whalecast.domain import Series


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(history_bars=60, whale=False)) as simulator:
        yield simulator


def series_of(sim: Simulator, symbol: str) -> Series:
    return Series("binance", symbol, sim.timeframe)


async def test_replayed_bars_arrive_once_in_order_batched_per_close(sim: Simulator) -> None:
    running = await start_feed(sim, warmup_bars=3)
    try:
        await wait_until(lambda: all(len(running.delivered(s)) == 3 for s in sim.symbols))
        await wait_subscribed(sim)
        for _ in range(5):
            await sim.advance(1)
            newest = sim.closed_bars(sim.symbols[0])[-1][0]
            await wait_until(lambda n=newest: running.batches[-1][0].open_ms == n, what="the bar")
        for symbol in sim.symbols:
            assert running.rows(symbol) == truth(sim, symbol)[-8:]
        # every bar of the replay came in one batch with all series, straight from the flag
        assert [len(b) for b in running.batches[-5:]] == [4] * 5
        assert all(len({c.open_ms for c in b}) == 1 for b in running.batches[-5:])
        ws = running.sample("whalecast_bars_closed_total", exchange="binance", timeframe="1h",
                            source="ws_flag")  # fmt: skip
        rest = running.sample("whalecast_backfill_bars_total", exchange="binance", timeframe="1h")
        assert (ws, rest) == (20, 12)
    finally:
        await running.stop()


async def test_disconnects_and_stall_lose_nothing(sim: Simulator) -> None:
    start = sim.closed_bars("BTC/USDT")[-1][0]
    resume = {series_of(sim, s): start for s in sim.symbols}
    running = await start_feed(sim, feed_settings(stale_after_seconds=0.4), resume_from=resume)
    try:
        await wait_subscribed(sim)
        for _ in range(3):  # k forced disconnects, bars closing while we are away
            await sim.advance(1)
            await sim.faults.drop_connections()
            await sim.advance(2)
            await wait_subscribed(sim)
        sim.faults.stall(0.6)  # connected, silent: the watchdog must notice
        await sim.advance(2)
        await wait_until(lambda: running.sample("whalecast_feed_reconnects_total",
                         exchange="binance", feed="candles", cause="stale") >= 1)  # fmt: skip
        await wait_subscribed(sim)
        await sim.advance(1)
        newest = sim.closed_bars("BTC/USDT")[-1][0]
        await wait_until(lambda: all(running.rows(s)[-1:] and running.rows(s)[-1][0] == newest
                                     for s in sim.symbols), what="catch-up")  # fmt: skip
        for symbol in sim.symbols:
            assert running.rows(symbol) == truth(sim, symbol, after_ms=start)  # no gap, no dup
        errors = running.sample("whalecast_feed_reconnects_total", exchange="binance",
                                feed="candles", cause="error")  # fmt: skip
        assert errors >= 3
        # the 3 × 2 bars closed while disconnected and the 2 withheld by the stall came by REST
        assert running.sample("whalecast_backfill_bars_total", exchange="binance",
                              timeframe="1h") >= 32  # fmt: skip
    finally:
        await running.stop()


async def test_restart_resumes_with_backfill_and_no_duplicate(sim: Simulator) -> None:
    first = await start_feed(sim, warmup_bars=2)
    await wait_until(lambda: all(len(first.delivered(s)) == 2 for s in sim.symbols))
    await wait_subscribed(sim)
    await sim.advance(2)
    await wait_until(lambda: all(len(first.delivered(s)) == 4 for s in sim.symbols))
    await first.stop()
    await sim.advance(3)  # closes while nobody listens
    second = await start_feed(sim, resume_from=first.last(), warmup_bars=50)
    try:
        await wait_until(lambda: all(len(second.delivered(s)) == 3 for s in sim.symbols))
        await wait_subscribed(sim)
        await sim.advance(1)
        await wait_until(lambda: all(len(second.delivered(s)) == 4 for s in sim.symbols))
        for symbol in sim.symbols:
            assert first.rows(symbol) + second.rows(symbol) == truth(sim, symbol)[-8:]
    finally:
        await second.stop()


async def test_deadline_fetches_a_bar_whose_closed_event_never_came(sim: Simulator) -> None:
    start = sim.closed_bars("BTC/USDT")[-1][0]
    resume = {series_of(sim, s): start for s in sim.symbols}
    running = await start_feed(sim, resume_from=resume)  # watchdog far away (30 s)
    try:
        await wait_subscribed(sim)
        sim.faults.stall(0.5)  # the events of the next bars are withheld, the socket stays up
        await sim.advance(1)
        await sim.advance(1)  # the clock passes the first bar's end + grace
        await wait_until(lambda: all(len(running.delivered(s)) >= 1 for s in sim.symbols))
        for symbol in sim.symbols:
            assert running.rows(symbol)[0] == truth(sim, symbol, after_ms=start)[0]
        rest = running.sample("whalecast_bars_closed_total", exchange="binance", timeframe="1h",
                              source="rest")  # fmt: skip
        assert rest >= 4
        assert running.sample("whalecast_feed_reconnects_total", exchange="binance",
                              feed="candles", cause="stale") == 0  # fmt: skip
    finally:
        await running.stop()


async def test_subscriptions_are_sharded_and_paced() -> None:
    config = SimulatorConfig(synthetic=10, synthetic_bars=80, history_bars=40, whale=False)
    async with Simulator(config) as sim:
        settings = {"max_streams_per_connection": 3, "subscribe_messages_per_second": 20.0}
        running = await start_feed(sim, exchange=settings)
        try:
            await wait_subscribed(sim, 10)
            streams = sorted(len(c.streams) for c in sim.stream.hub.connections.values())
            assert streams == [1, 3, 3, 3]
            assert len(running.feed.connections) == 4
            await sim.advance(2)
            await wait_until(lambda: all(len(running.delivered(s)) == 2 for s in sim.symbols))
            for symbol in sim.symbols:
                assert running.rows(symbol) == truth(sim, symbol)[-2:]
        finally:
            await running.stop()


async def test_rest_hole_is_skipped_and_reported(sim: Simulator) -> None:
    closed = [r[0] for r in sim.closed_bars("ETH/USDT")]
    resume = {series_of(sim, s): closed[-10] for s in sim.symbols}
    sim.faults.rest_gap("ETH/USDT", closed[-7], closed[-4])  # the exchange never had these 3
    running = await start_feed(sim, resume_from=resume)
    try:
        await wait_until(lambda: all(len(running.delivered(s)) >= 6 for s in sim.symbols))
        await wait_subscribed(sim)
        await sim.advance(1)
        await wait_until(lambda: len(running.delivered("ETH/USDT")) == 7)
        expected = [r for r in truth(sim, "ETH/USDT", after_ms=closed[-10])
                    if not closed[-7] <= r[0] < closed[-4]]  # fmt: skip
        assert running.rows("ETH/USDT") == expected
        assert running.sample("whalecast_bars_missing_total", exchange="binance",
                              timeframe="1h") == 3  # fmt: skip
        assert running.rows("BTC/USDT") == truth(sim, "BTC/USDT", after_ms=closed[-10])
    finally:
        await running.stop()


async def test_start_up_survives_failing_rest(sim: Simulator) -> None:
    sim.faults.rest_errors(2, status=503)  # markets and server time fail first
    running = await start_feed(sim, feed_settings(clock="live"), warmup_bars=3)
    try:
        await wait_until(lambda: all(len(running.delivered(s)) == 3 for s in sim.symbols))
        for symbol in sim.symbols:
            assert running.rows(symbol) == truth(sim, symbol)[-3:]
        assert sim.faults.counters["rest_errors:503"] == 2
        skew = running.sample("whalecast_clock_skew_seconds", exchange="binance")
        assert skew < -86_400  # the simulator replays the past: measured, exported
    finally:
        await running.stop()


async def test_connections_are_renewed_before_their_lifetime_ends(sim: Simulator) -> None:
    start = sim.closed_bars("BTC/USDT")[-1][0]
    resume = {series_of(sim, s): start for s in sim.symbols}
    settings = feed_settings(connection_lifetime_seconds=0.3, client_recreate_seconds=60.0)
    running = await start_feed(sim, settings, resume_from=resume)
    try:
        for _ in range(4):
            await wait_subscribed(sim)
            await sim.advance(1)
        await wait_until(lambda: running.sample("whalecast_feed_reconnects_total",
                         exchange="binance", feed="candles", cause="lifetime") >= 2)  # fmt: skip
        newest = sim.closed_bars("BTC/USDT")[-1][0]
        await wait_until(lambda: all(running.rows(s)[-1:] and running.rows(s)[-1][0] == newest
                                     for s in sim.symbols))  # fmt: skip
        for symbol in sim.symbols:
            assert running.rows(symbol) == truth(sim, symbol, after_ms=start)
        errors = running.sample("whalecast_feed_reconnects_total", exchange="binance",
                                feed="candles", cause="error")  # fmt: skip
        assert errors == 0  # renewed on purpose, without waiting for a backoff
    finally:
        await running.stop()


async def test_one_subscription_per_symbol_where_the_exchange_needs_it(sim: Simulator) -> None:
    # the simulator closes a connection that sends more than 5 messages a second
    settings = {"subscribe_messages_per_second": 4.0}
    running = await start_feed(sim, exchange=settings, warmup_bars=1)
    running.feed.adapter.prefer_for_symbols = False
    try:
        await wait_subscribed(sim)
        assert len(sim.stream.hub.connections) == 1
        await sim.advance(2)
        await wait_until(lambda: all(len(running.delivered(s)) == 3 for s in sim.symbols))
        for symbol in sim.symbols:
            assert running.rows(symbol) == truth(sim, symbol)[-3:]
        assert sim.faults.counters["exchange_rate_limited"] == 0
        ws = running.sample("whalecast_bars_closed_total", exchange="binance", timeframe="1h",
                            source="ws_flag")  # fmt: skip
        assert ws == 8
    finally:
        await running.stop()
