"""Closed bars handed on in batches: one close together, each series in order, never lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from streamer.batches import CloseBatches
from testkit.polling import wait_until
from whalecast.domain import Candle, Series
from whalecast.settings import FeedSettings

H = 3_600_000
T0 = 1_767_225_600_000
SERIES = [Series("binance", s, "1h") for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT")]


def bar(series: Series, open_ms: int) -> Candle:
    return Candle(series.exchange, series.symbol, series.timeframe, open_ms,
                  10.0, 11.0, 9.0, 10.5, 1.0, closed=True)  # fmt: skip


class Receiver:
    """``on_closed`` that records each batch; fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[Candle]] = []
        self.failures = failures
        self.calls = 0

    async def __call__(self, candles: list[Candle]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("the bar loop could not take it")
        self.batches.append(list(candles))


@pytest.fixture
async def running() -> AsyncIterator[tuple[CloseBatches, Receiver]]:
    receiver = Receiver(failures=1)
    # a long wait: a batch that goes out early went because every series had its bar
    feed = FeedSettings(batch_wait_seconds=60.0, backoff_initial_seconds=0.01)
    batches = CloseBatches(len(SERIES), feed, receiver)
    task = asyncio.create_task(batches.run())
    yield batches, receiver
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_bars_of_one_close_go_together_and_a_failed_batch_comes_again(
    running: tuple[CloseBatches, Receiver],
) -> None:
    batches, receiver = running
    batches.add(bar(SERIES[0], T0 - H), "rest")  # an older bar of one series, caught up
    for series in SERIES:
        batches.add(bar(series, T0), "ws_flag")
    await wait_until(lambda: len(receiver.batches) == 1, what="the close's batch")
    (batch,) = receiver.batches
    assert receiver.calls == 2  # the first attempt failed: the same batch was handed again
    assert [(c.symbol, c.open_ms) for c in batch] == [("BTC/USDT", T0 - H)] + [
        (s.symbol, T0) for s in SERIES
    ]  # oldest first, each series in order


async def test_a_close_missing_a_series_waits_at_most_the_batch_wait() -> None:
    receiver = Receiver()
    feed = FeedSettings(batch_wait_seconds=0.05)
    batches = CloseBatches(len(SERIES), feed, receiver)
    task = asyncio.create_task(batches.run())
    try:
        batches.add(bar(SERIES[0], T0), "ws_flag")
        await wait_until(lambda: len(receiver.batches) == 1, what="the partial batch")
        batches.add(bar(SERIES[1], T0), "ws_flag")  # late: its own batch
        await wait_until(lambda: len(receiver.batches) == 2, what="the late series' batch")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [[c.symbol for c in b] for b in receiver.batches] == [["BTC/USDT"], ["ETH/USDT"]]
