"""Exchange faults against a running daemon, the invariant checked after each, on each
exchange's protocol (Binance, Bybit v5, OKX v5).

The simulator is stepped by hand (one bar per ``advance``), so every fault lands
at a known bar. Faults: the websocket dropped k times, refused for a while,
stalled silently; bad kline messages of every kind; REST failing and
rate-limiting (429 + Retry-After) while it fills a gap; a series whose close
arrives after the grace period; a burst of bars after an outage.
"""

# ruff: noqa: F401, F811 - the sim and registry fixtures come from testkit.faults

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference.daemon import Daemon
from streamer.simulator import KLINE_FAULTS, Simulator, SimulatorConfig
from testkit.faults import (
    Invariant,
    advance,
    check_daemon,
    checked_daemon,
    registry,
    rejected,
    sample,
)
from testkit.polling import wait_until
from tests.feed_helpers import KLINE_FAULT_REASONS, wait_subscribed

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]


@pytest.fixture(params=["binance", "bybit", "okx"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    """The shipped data slice with whale alerts on one exchange's protocol, stepped by hand."""
    config = SimulatorConfig(bar_seconds=None, history_bars=120, exchanges=(request.param,))
    async with Simulator(config) as simulator:
        yield simulator


@pytest.fixture
async def running(
    sim: Simulator, registry: Path, redis_url: str
) -> AsyncIterator[tuple[Invariant, Daemon]]:
    async with checked_daemon(sim, redis_url, registry) as both:
        yield both


def reconnects(daemon: Daemon, cause: str) -> float:
    exchange = daemon.feeds[0].settings.id
    return sample(
        daemon.metrics, "whalecast_feed_reconnects_total", exchange=exchange, feed="candles",
        cause=cause,
    )  # fmt: skip


async def test_dropped_refused_and_stalled_websocket(
    sim: Simulator, running: tuple[Invariant, Daemon]
) -> None:
    invariant, daemon = running

    for _ in range(3):  # dropped k times, each right before a close
        assert await sim.faults.drop_connections() == 1
        await advance(sim)
        await check_daemon(invariant, daemon)
    assert reconnects(daemon, "error") >= 3

    sim.faults.refuse(1.5)  # refused for a while: two bars close meanwhile
    await sim.faults.drop_connections()
    await wait_until(lambda: sim.faults.counters["exchange_refused"] >= 1, what="refusal")
    await advance(sim, 2)
    await check_daemon(invariant, daemon)

    await wait_until(lambda: daemon.feeds[0].connected, what="reconnected")
    await wait_subscribed(sim)  # the stall must catch a subscribed connection
    sim.faults.stall(4.0)  # silent: no events, no pongs; the watchdog must notice
    await advance(sim)
    outcome = await check_daemon(invariant, daemon, timeout_seconds=30)
    assert reconnects(daemon, "stale") >= 1
    assert sim.faults.counters["stall_events_withheld"] > 0

    await advance(sim)
    outcome = await check_daemon(invariant, daemon)
    outcome.assert_all_predicted(len(sim.symbols), bars=8)


async def test_bad_messages_are_counted_and_lose_nothing(
    sim: Simulator, running: tuple[Invariant, Daemon]
) -> None:
    invariant, daemon = running
    for kind in sorted(KLINE_FAULTS):
        reason = KLINE_FAULT_REASONS[kind]
        before = rejected(daemon.metrics, reason)
        sim.faults.inject(kind)
        await advance(sim)
        await check_daemon(invariant, daemon)
        assert sim.faults.counters[f"injected:{kind}"] == len(sim.symbols)
        assert rejected(daemon.metrics, reason) - before >= len(sim.symbols), kind
    outcome = await check_daemon(invariant, daemon)
    outcome.assert_all_predicted(len(sim.symbols), bars=len(KLINE_FAULTS) + 1)


async def gap_of_two_bars(sim: Simulator) -> None:
    """Two bars close while the websocket is down (refused): REST must fill them."""
    sim.faults.refuse(1.0)
    await sim.faults.drop_connections()
    await wait_until(lambda: sim.faults.counters["exchange_refused"] >= 1, what="refusal")
    sim.faults.counters["exchange_refused"] = 0
    await advance(sim, 2)


async def test_rest_failing_and_rate_limited_during_a_gap(
    sim: Simulator, running: tuple[Invariant, Daemon]
) -> None:
    invariant, daemon = running
    requests = "whalecast_backfill_requests_total"

    # a gap (two bars closed while disconnected), klines failing more often than the
    # feed retries one request (rest_retries = 5): the backfill fails, and is tried again
    sim.faults.rest_errors(8, status=500, endpoint="klines")
    await gap_of_two_bars(sim)
    await check_daemon(invariant, daemon, timeout_seconds=40)
    assert sample(daemon.metrics, requests, exchange=sim.exchange, outcome="error") >= 8
    assert sim.faults.counters["rest_errors:500"] == 8

    # the next gap: rate-limited with Retry-After, which the feed must honour
    sim.faults.rest_errors(3, status=429, retry_after=0.5, endpoint="klines")
    await gap_of_two_bars(sim)
    await check_daemon(invariant, daemon, timeout_seconds=40)
    assert sample(daemon.metrics, requests, exchange=sim.exchange, outcome="rate_limited") >= 3
    assert sim.faults.counters["rest_errors:429"] == 3
    outcome = await check_daemon(invariant, daemon)
    outcome.assert_all_predicted(len(sim.symbols), bars=5)


async def test_late_series_and_a_burst_after_an_outage(
    sim: Simulator, running: tuple[Invariant, Daemon]
) -> None:
    invariant, daemon = running
    late = "whalecast_series_late_total"

    # one series' close never comes on the websocket: the others are predicted after the
    # grace period; it is fetched over REST once the next bar forms, and predicted late
    sim.faults.withhold(sim.symbols[0])
    await advance(sim)
    await wait_until(lambda: sample(daemon.metrics, "whalecast_bars_processed_total",
                                  timeframe="1h") >= 2, what="main batch")  # fmt: skip
    await advance(sim)
    await check_daemon(invariant, daemon)
    assert sample(daemon.metrics, late, timeframe="1h") == 1
    assert sim.faults.counters["closed_withheld"] == 1

    # an outage of five bars, then all of them at once: each predicted from its own window
    sim.faults.refuse(2.0)
    await sim.faults.drop_connections()
    await advance(sim, 5)
    outcome = await check_daemon(invariant, daemon, timeout_seconds=40)
    assert sample(daemon.metrics, "whalecast_backfill_bars_total",
                  exchange=sim.exchange, timeframe="1h") >= 5 * len(sim.symbols)  # fmt: skip
    outcome.assert_all_predicted(len(sim.symbols), bars=8)
