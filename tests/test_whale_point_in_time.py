"""Point-in-time whale features: what the trainer computes from a recording of the live feed
equals, bar for bar, the whale columns the daemon stored for the same feed.

The simulator sends every whale alert 90 minutes after its block time, so live a transfer
lands one bar after the bar of its block time: the rule (the bar of the knowledge time)
is what both sides must agree on, not block times.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis.asyncio as aioredis

from streamer.features import BAR_COLUMNS
from streamer.history import WHALE_COLUMNS
from streamer.simulator import Simulator, SimulatorConfig
from streamer.store_format import unpack_bars
from streamer.whale_history import read_pages
from streamer.whale_record import recorded_transfers
from streamer.whale_rule import WhaleRule
from testkit.daemon import (
    clocks_caught_up,
    metric,
    simulated_daemon,
    wait_until_ready,
    write_demo_models,
)
from testkit.polling import wait_until
from training.whale import load_whale
from whalecast.domain import Flow, Series, floor_to_bar
from whalecast.keys import Keys

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

HOUR = 3_600_000
#: Two bars before a run of hours with BTC and ETH exchange flows in the shipped whale data.
START_MS = 1_736_161_200_000
BARS = 10
DELAY_SECONDS = 5400.0


def subscribed(sim: Simulator) -> bool:
    assert sim.whale is not None
    return any(conn.subscriptions for conn in sim.whale.hub.connections.values())


async def stored_bars(redis: aioredis.Redis, series: Series) -> np.ndarray:
    members = await redis.zrange(Keys("wc").bars(series), 0, -1)
    return unpack_bars(members)


async def test_trainer_whale_columns_from_a_recording_equal_the_stored_ones(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry, recording = tmp_path / "registry", tmp_path / "whale.jsonl"
    write_demo_models(registry)
    config = SimulatorConfig(bar_seconds=None, start_ms=START_MS, whale_delay_seconds=DELAY_SECONDS)
    whale = {"record_path": str(recording), "min_value_usd": 0.0, "max_delay_seconds": 7200.0}
    async with simulated_daemon(redis_url, redis_client, registry, config, whale=whale) as run:
        daemon, sim = run.daemon, run.sim
        await wait_until_ready(daemon)
        await wait_until(lambda: subscribed(sim), what="the whale feed subscribed")
        for _ in range(BARS):
            await clocks_caught_up(sim, daemon)
            await run.step()
        newest = sim.now_ms - HOUR
        await wait_until(
            lambda: len(run.of_bar(newest)) == 2 * len(daemon.series), what="the last bar"
        )
        assert sim.whale is not None
        sent = sum(len(a["amounts"]) for a in sim.whale.sent_alerts)

        def reached() -> float:
            flows = (metric(daemon, "whalecast_whale_transfers_total", flow=f.value) for f in Flow)
            return sum(n or 0.0 for n in flows)

        await wait_until(lambda: reached() == sent, what="every alert sent reached a bar")
        stored = {s: await stored_bars(redis_client, s) for s in daemon.series}
        rule = WhaleRule.from_settings(daemon.settings.whale, daemon.settings.feed)
        stablecoins = daemon.settings.whale.stablecoins
    assert sent >= 5

    flows = load_whale([recording], stablecoins, rule)
    counted = 0.0
    for series, bars in stored.items():
        candles = pd.DataFrame(bars[:, :6], columns=list(BAR_COLUMNS[:6]))
        candles["open_ms"] = candles["open_ms"].astype(np.int64)
        table = flows.bars(candles, series)
        assert table["open_ms"].tolist() == candles["open_ms"].tolist()
        np.testing.assert_array_equal(table[list(WHALE_COLUMNS)].to_numpy(), bars[:, 6:])
        counted += bars[:, 8].sum()
    transfers = recorded_transfers(read_pages(recording)).transfers
    assert len(transfers) == sent
    # every transfer is in the stored bar of its knowledge time (bar counts are per asset)
    in_stored = [t for t in transfers if floor_to_bar(t.known_ms or 0, HOUR) <= newest]
    assert counted == len(in_stored) > 0
    # the delay moved every transfer out of the bar of its block time, and both sides agree
    moved = [floor_to_bar(t.known_ms or 0, HOUR) - floor_to_bar(t.ts_ms, HOUR) for t in transfers]
    assert set(moved) == {HOUR}
    assert all(t.flow in (Flow.INFLOW, Flow.OUTFLOW) for t in transfers)  # change told apart
