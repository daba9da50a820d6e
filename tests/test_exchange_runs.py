"""200 bars of the daemon against each exchange's protocol with faults injected all along,
and one daemon on Binance, Bybit and OKX series at once.

Every 10 bars the schedule below injects its faults (dropped connections, bad messages
of every kind in turn, duplicates and out-of-order bars among them, a gap filled over a
rate-limited REST, a series whose close never comes on the websocket, a silent stall
twice); the invariant (every bar stored once with exact values, every complete window
predicted once) is checked after each 10 bars and at the end over all 200.
"""

# ruff: noqa: F401, F811 - the registry fixture comes from testkit.faults

from __future__ import annotations

from itertools import cycle
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
)
from testkit.polling import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

RUN_BARS = 200  # steps of the schedule; 220 bars close
STALLS_AT = (49, 149)


def all_subscribed(sim: Simulator) -> bool:
    """Every exchange served has every series subscribed on its open connections."""
    return all(
        sum(len(conn.streams) for conn in stream.hub.connections.values()) >= len(sim.symbols)
        for stream in sim.streams.values()
    )


async def one_bar(sim: Simulator, bar: int, kinds: cycle[str]) -> None:
    """Plays bar ``bar`` of the run with this bar's faults armed."""
    faults, step = sim.faults, bar % 10
    if step == 1:
        await faults.drop_connections()  # the server going away (1001) right before a close
    elif step == 3:  # a bad message around every series' close, seen by a subscribed client
        await wait_until(lambda: all_subscribed(sim), what="subscriptions")
        faults.inject(next(kinds))
    elif step == 5:  # a gap of two bars, filled by a REST that first answers "rate limited"
        faults.rest_errors(2, status=429, retry_after=0.2, endpoint="klines")
        faults.refuse(2.0)
        await faults.drop_connections()
        await advance(sim)  # closes while the websocket is down
    elif step == 7:
        faults.withhold(sim.symbols[bar // 10 % len(sim.symbols)])
    elif bar in STALLS_AT:
        await wait_until(lambda: all_subscribed(sim), what="subscriptions")
        faults.stall(4.0)  # silent (no events, no pongs): the watchdog reconnects
        await advance(sim)
        await wait_until(lambda: not faults.stalled(), what="the stall's end")
        return
    await advance(sim)


async def run_with_faults(sim: Simulator, invariant: Invariant, daemon: Daemon) -> None:
    kinds, first = cycle(sorted(KLINE_FAULTS)), sim.bars_played
    for bar in range(1, RUN_BARS + 1):
        await one_bar(sim, bar, kinds)
        if bar % 10 == 0:
            await check_daemon(invariant, daemon, timeout_seconds=60)
    outcome = await check_daemon(invariant, daemon, timeout_seconds=60)
    played = sim.bars_played - first  # the gaps play a second bar each
    assert played == RUN_BARS + RUN_BARS // 10
    outcome.assert_all_predicted(len(invariant.series), bars=played + 1)


@pytest.mark.parametrize("exchange", ["binance", "bybit", "okx"])
async def test_200_bars_with_faults(exchange: str, registry: Path, redis_url: str) -> None:
    config = SimulatorConfig(bar_seconds=None, history_bars=120, exchanges=(exchange,))
    async with (
        Simulator(config) as sim,
        checked_daemon(sim, redis_url, registry) as (invariant, daemon),
    ):
        await run_with_faults(sim, invariant, daemon)
        injected = {k: v for k, v in sim.faults.counters.items() if k.startswith("injected:")}
        for kind in KLINE_FAULTS:
            assert sim.faults.counters[f"injected:{kind}"] >= len(sim.symbols), (kind, injected)
        assert sim.faults.counters["rest_errors:429"] == 40
        assert sim.faults.counters["closed_withheld"] == 20


async def test_one_daemon_on_three_exchanges(registry: Path, redis_url: str) -> None:
    config = SimulatorConfig(bar_seconds=None, history_bars=120,
                             exchanges=("binance", "bybit", "okx"))  # fmt: skip
    async with (
        Simulator(config) as sim,
        checked_daemon(sim, redis_url, registry) as (invariant, daemon),
    ):
        assert sorted(f.settings.id for f in daemon.feeds) == ["binance", "bybit", "okx"]
        assert len(invariant.series) == 3 * len(sim.symbols)
        kinds, first = cycle(sorted(KLINE_FAULTS)), sim.bars_played
        for bar in range(1, 21):  # every exchange sees the same faults at the same bar
            await one_bar(sim, bar, kinds)
        outcome = await check_daemon(invariant, daemon, timeout_seconds=60)
        outcome.assert_all_predicted(len(invariant.series), bars=sim.bars_played - first + 1)
        assert (
            sim.faults.counters["closed_withheld"] == 2
        )  # once per withheld close, not per exchange
