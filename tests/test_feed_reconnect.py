"""The candle feed comes back from every way a websocket connection can fail, on each
exchange's protocol with the real ccxt client: a handshake refused (HTTP 503), a handshake
held open without an answer, a connection dropped mid-stream. After each the feed
reconnects by itself and delivers the next bar."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streamer.simulator import Simulator, SimulatorConfig
from testkit.polling import wait_until
from tests.feed_helpers import RunningFeed, feed_settings, start_feed, wait_subscribed

# Each case waits out a refused, held or dropped connection on three exchanges: feed
# runs, not unit tests (streamer/reconnect.py's loop has its unit tests in test_reconnect).
pytestmark = pytest.mark.slow

STALE_AFTER = 2.0  # the feed's silence watchdog, which also bounds a handshake


Running = tuple[Simulator, RunningFeed]


@pytest.fixture(params=["binance", "bybit", "okx"])
async def running(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    """One exchange's simulator and a feed on it that has its first bar, subscribed."""
    config = SimulatorConfig(history_bars=60, whale=False, exchanges=(request.param,))
    async with Simulator(config) as sim:
        feed = await start_feed(sim, feed_settings(stale_after_seconds=STALE_AFTER), warmup_bars=1)
        try:
            await wait_until(lambda: all(len(feed.delivered(s)) == 1 for s in sim.symbols),
                             what="the first bar")  # fmt: skip
            await wait_subscribed(sim)
            yield sim, feed
        finally:
            await feed.stop()


def reconnects(feed: RunningFeed, sim: Simulator, cause: str) -> float:
    return feed.sample("whalecast_feed_reconnects_total", exchange=sim.exchange,
                       feed="candles", cause=cause)  # fmt: skip


async def next_bar_delivered(sim: Simulator, feed: RunningFeed, within: float = 30.0) -> None:
    """Plays one bar; every series gets it, with the simulator's values, once."""
    wanted = {s: len(feed.delivered(s)) + 1 for s in sim.symbols}
    await sim.advance(1)
    await wait_until(lambda: all(len(feed.delivered(s)) >= n for s, n in wanted.items()),
                     within, what="the next bar on every series")  # fmt: skip
    for symbol, count in wanted.items():
        assert len(feed.delivered(symbol)) == count
        assert feed.rows(symbol)[-1] == tuple(sim.closed_bars(symbol)[-1])


async def test_refused_handshakes(running: Running) -> None:
    sim, feed = running
    for round_ in range(3):  # a refusal after a refusal, as a restarting exchange answers
        sim.faults.refuse(1.0)
        await sim.faults.drop_connections()
        await wait_until(lambda r=round_: sim.faults.counters["exchange_refused"] > r,
                         what="a refused handshake")  # fmt: skip
        await next_bar_delivered(sim, feed)
        await wait_until(lambda: feed.feed.connected, what="reconnected")
    assert reconnects(feed, sim, "error") >= 6  # each drop and each refusal


async def test_handshake_held_without_an_answer(running: Running) -> None:
    sim, feed = running
    sim.faults.hold(3 * STALE_AFTER)
    await sim.faults.drop_connections()
    # the feed gives a held handshake up on its own and tries again while still held
    await wait_until(lambda: sim.faults.counters["exchange_held"] >= 2, 5 * STALE_AFTER,
                     what="a second held handshake")  # fmt: skip
    await next_bar_delivered(sim, feed)
    assert reconnects(feed, sim, "stale") >= 1


async def test_dropped_mid_stream(running: Running) -> None:
    sim, feed = running
    for _ in range(3):
        await wait_subscribed(sim)
        assert await sim.faults.drop_connections() == 1
        await next_bar_delivered(sim, feed)
    assert reconnects(feed, sim, "error") >= 3
