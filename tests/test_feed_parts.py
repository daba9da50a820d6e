"""Backoff, row parsing, candle validation, clocks and subscription pacing."""

from __future__ import annotations

import asyncio
import math
import random
import time

import ccxt.pro
import pytest

from streamer.backoff import Backoff, ceiling
from streamer.clock import LiveClock, ReplayClock
from streamer.connection import SubscribeLimiter
from streamer.simulator import Simulator, SimulatorConfig
from streamer.validation import CandleValidator, candle_from_row
from testkit.polling import wait_until
from tests.feed_helpers import feed_settings
from whalecast.domain import Series
from whalecast.metrics import Metrics

BTC = Series("binance", "BTC/USDT", "1h")
T0 = 1_767_225_600_000


class FakeMonotonic:
    """A hand-moved monotonic clock (the real one cannot be moved by hours in a test)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets_after_health() -> None:
    mono = FakeMonotonic()
    backoff = Backoff(1.0, 8.0, reset_after=60.0, rng=random.Random(3), monotonic=mono)
    delays = [backoff.delay() for _ in range(6)]
    for delay, top in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert top / 2 <= delay <= top
    backoff.healthy()
    mono.now += 59.0
    assert backoff.delay() >= 4.0  # not healthy long enough: still at the cap
    backoff.healthy()
    mono.now += 60.0
    assert backoff.delay() <= 1.0  # a healthy minute: back to the start


def test_one_backoff_formula_for_jittered_and_plain_waits() -> None:
    assert [ceiling(1.0, 8.0, n) for n in range(6)] == [1, 2, 4, 8, 8, 8]
    assert ceiling(1.0, 8.0, -1) == 1.0 and ceiling(0.1, 5.0, 10_000) == 5.0  # no overflow


@pytest.mark.parametrize(
    ("row", "ok"),
    [
        ([T0, "1.5", "2", "1", "1.75", "10"], True),
        ([T0, 1.5, 2, 1, 1.75, 10, T0 + 3_599_999, "x"], True),
        ([float(T0), 1.5, 2, 1, 1.75, 10], True),
        ([T0 + 0.5, 1.5, 2, 1, 1.75, 10], False),
        ([str(T0), 1.5, 2, 1, 1.75, 10], False),
        ([True, 1.5, 2, 1, 1.75, 10], False),
        ([T0, None, 2, 1, 1.75, 10], False),
        ([T0, {"price": 1}, 2, 1, 1.75, 10], False),
        ([T0, "abc", 2, 1, 1.75, 10], False),
        ([T0, 1.5, 2, 1, 1.75], False),
        ([math.nan, 1.5, 2, 1, 1.75, 10], False),
    ],
)
def test_rows_parse_or_are_malformed(row: list[object], ok: bool) -> None:
    assert (candle_from_row(BTC, row, closed=True) is not None) is ok


def test_validation_names_each_problem() -> None:
    metrics = Metrics(process=False)
    clock = LiveClock()
    validator = CandleValidator(feed_settings(max_age_days=30), clock, metrics)
    now = clock.now_ms()
    base = [now - now % 3_600_000 - 3_600_000, 10.0, 12.0, 9.0, 11.0, 5.0]

    def problem(**changes: float) -> str | None:
        row = list(base)
        for index, name in enumerate(("open_ms", "open", "high", "low", "close", "volume")):
            if name in changes:
                row[index] = changes[name]
        candle = candle_from_row(BTC, row, closed=True)
        assert candle is not None
        return validator.problem(candle)

    assert problem() is None
    assert problem(close=math.inf) == "non_finite"
    assert problem(volume=-1.0) == "non_positive"
    assert problem(high=8.0) == "high_below_low"
    assert problem(close=13.0) == "price_outside_range"
    assert problem(open_ms=base[0] + 1) == "off_grid"
    assert problem(open_ms=base[0] + 3 * 3_600_000) == "from_future"
    assert problem(open_ms=base[0] - 31 * 86_400_000) == "too_old"
    assert validator.accept(None) is False
    rejected = metrics.registry.get_sample_value(
        "whalecast_feed_rejected_total", {"feed": "candles", "reason": "malformed"}
    )
    assert rejected == 1


async def test_replay_clock_follows_the_simulator_and_is_never_ahead() -> None:
    async with Simulator(SimulatorConfig(history_bars=30, whale=False)) as sim:
        client = ccxt.pro.binance({"enableRateLimit": False})
        client.urls["api"]["public"] = sim.rest_url
        clock = ReplayClock(client.fetch_time, poll_seconds=0.02)
        try:
            await clock.start()
            assert clock.now_ms() == sim.now_ms
            await sim.advance(3)
            await wait_until(lambda: clock.now_ms() == sim.now_ms)
            assert clock.slack_ms() >= 4 * 3_600_000  # it saw a jump of at least one bar
            clock.observe(sim.now_ms + 3 * 86_400_000)  # absurd event time: ignored
            assert clock.now_ms() == sim.now_ms
            clock.observe(sim.now_ms + 60_000)  # a server event a minute on: followed
            assert clock.now_ms() == sim.now_ms + 60_000
        finally:
            await clock.aclose()
            await client.close()


async def test_subscriptions_are_paced() -> None:
    limiter = SubscribeLimiter(rate=20.0)
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(5)))
    assert time.monotonic() - started >= 4 / 20 - 0.01
