"""Whale feed faults against a running daemon: down for a while, flapping, sending garbage.

The candle side must not notice: every bar stored and predicted, every bad whale message
counted and dropped. (Whale aggregates of bars closed while the feed was down are zero:
Whale Alert has no backfill; the invariant checks the features of what was stored.)
"""

# ruff: noqa: F401, F811 - the sim and registry fixtures come from testkit.faults

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamer.simulator import Simulator, SimulatorConfig
from streamer.simulator.faults import WHALE_FAULTS
from testkit.faults import advance, check_daemon, checked_daemon, registry, rejected, sample
from testkit.polling import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

REASONS = {
    "malformed_json": "malformed",
    "wrong_type": "malformed",
    "missing_field": "malformed",
    "negative": "bad_amount",
    "nan": "bad_amount",
    "unknown_type": "unknown_type",
}


#: Two bars before a run of hours with BTC exchange flows in the shipped whale data.
START_MS = 1_736_161_200_000


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(SimulatorConfig(bar_seconds=None, start_ms=START_MS))
    await simulator.start()
    yield simulator
    await simulator.stop()


def whale_connected(metrics: object) -> bool:
    gauge = sample(metrics, "whalecast_feed_connected", exchange="whale", feed="alerts")  # type: ignore[arg-type]
    return gauge == 1


def whale_subscribed(sim: Simulator) -> bool:
    """The simulator has a subscribed whale client to send the next injection to."""
    assert sim.whale is not None
    return any(conn.subscriptions for conn in sim.whale.hub.connections.values())


def whale_reconnects(metrics: object) -> float:
    return sample(
        metrics,  # type: ignore[arg-type]
        "whalecast_feed_reconnects_total",
        exchange="whale",
        feed="alerts",
        cause="error",
    )


async def test_whale_feed_down_flapping_and_garbage(
    sim: Simulator, registry: Path, redis_url: str
) -> None:
    async with checked_daemon(sim, redis_url, registry) as (invariant, daemon):
        metrics = daemon.metrics
        await advance(sim, 4)
        await check_daemon(invariant, daemon)
        assert sample(metrics, "whalecast_whale_transfers_total", flow="inflow") > 0

        await sim.faults.whale_down(2.0)  # down for longer than a bar
        await advance(sim, 2)
        await check_daemon(invariant, daemon)
        await wait_until(lambda: whale_reconnects(metrics) >= 2, what="whale reconnects")

        sim.faults.whale_flap(3)  # dropped at the start of each of the next three bars
        dropped = sim.faults.counters["whale_dropped"]
        for _ in range(3):
            await wait_until(lambda: whale_connected(metrics), what="whale feed back")
            await advance(sim)
        await check_daemon(invariant, daemon)
        assert sim.faults.counters["whale_dropped"] - dropped == 3

        for kind in sorted(WHALE_FAULTS):
            reason = REASONS[kind]
            before = rejected(metrics, reason, feed="whale")
            await wait_until(lambda: whale_subscribed(sim), what="whale client subscribed")
            sim.faults.whale_inject(kind)
            await advance(sim)
            await check_daemon(invariant, daemon)
            await wait_until(
                lambda: rejected(metrics, reason, feed="whale") > before,  # noqa: B023 - awaited here
                what=f"{kind} counted as {reason}",
            )
        outcome = await check_daemon(invariant, daemon)
    outcome.assert_all_predicted(len(sim.symbols), bars=5 + 2 + 3 + len(WHALE_FAULTS))
