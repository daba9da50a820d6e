"""Bad kline messages from the simulator: each rejected with its reason, the stream goes on,
on each exchange's protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streamer.simulator import KLINE_FAULTS, Simulator, SimulatorConfig
from testkit.polling import wait_until
from tests.feed_helpers import (
    KLINE_FAULT_REASONS,
    feed_settings,
    start_feed,
    truth,
    wait_subscribed,
)

REASON = KLINE_FAULT_REASONS


@pytest.fixture(params=["binance", "bybit", "okx"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(history_bars=60, whale=False, exchanges=(request.param,))
    async with Simulator(config) as simulator:
        yield simulator


def test_every_simulator_fault_has_an_expected_reason() -> None:
    assert set(REASON) == set(KLINE_FAULTS)


async def test_every_bad_kline_is_counted_and_dropped(sim: Simulator) -> None:
    running = await start_feed(sim, warmup_bars=1)
    try:
        await wait_until(lambda: all(len(running.delivered(s)) == 1 for s in sim.symbols))
        await wait_subscribed(sim)
        for kind in sorted(KLINE_FAULTS):
            sim.faults.inject(kind, symbol="BTC/USDT")
        await sim.advance(2)
        await wait_until(lambda: all(len(running.delivered(s)) == 3 for s in sim.symbols))
        for symbol in sim.symbols:
            assert running.rows(symbol) == truth(sim, symbol)[-3:]
        for reason in set(REASON.values()):
            expected = sum(1 for r in REASON.values() if r == reason)
            got = running.sample("whalecast_feed_rejected_total", feed="candles", reason=reason)
            assert got == expected, reason
        assert running.sample("whalecast_feed_reconnects_total", exchange=sim.exchange,
                              feed="candles", cause="error") == 0  # fmt: skip
        assert running.sample("whalecast_bars_closed_total", exchange=sim.exchange, timeframe="1h",
                              source="ws_flag") == 8  # fmt: skip
    finally:
        await running.stop()


async def test_without_a_closed_flag_the_next_bar_closes_the_previous(sim: Simulator) -> None:
    # a stepped replay jumps a bar at a time: keep the deadline out of the way
    running = await start_feed(sim, feed_settings(grace_seconds=7200.0), closed_flag=False)
    try:
        await wait_subscribed(sim)
        for count in (0, 1, 2):  # at a live pace: each bar's successor shows up before its end
            await sim.advance(1)
            await wait_until(lambda c=count: all(len(running.delivered(s)) == c
                                                 for s in sim.symbols))  # fmt: skip
        for symbol in sim.symbols:
            assert running.rows(symbol) == truth(sim, symbol)[-3:-1]  # the newest waits
        assert running.sample("whalecast_bars_closed_total", exchange=sim.exchange, timeframe="1h",
                              source="next_bar") == 8  # fmt: skip
    finally:
        await running.stop()
