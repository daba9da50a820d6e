"""Running the real candle feed (real ccxt) against the exchange simulator in tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamer.candles import CandleFeed
from streamer.simulator import Simulator
from testkit.polling import wait_until
from whalecast.domain import Candle, Series
from whalecast.metrics import Metrics
from whalecast.settings import ExchangeSettings, FeedSettings

#: What the candle feed counts (feed_rejected reason) for each bad kline the simulator sends.
KLINE_FAULT_REASONS = {
    "malformed_json": "malformed",
    "wrong_type": "malformed",
    "nan": "non_finite",
    "negative": "non_positive",
    "high_below_low": "high_below_low",
    "duplicate": "duplicate",
    "out_of_order": "out_of_order",
    "off_grid": "off_grid",
    "unknown_symbol": "unknown_symbol",
    "future": "from_future",
}


FAST = {
    "clock": "replay",
    "grace_seconds": 1.0,
    "stale_after_seconds": 30.0,
    "backoff_initial_seconds": 0.02,
    "backoff_max_seconds": 0.2,
    "backoff_reset_after_seconds": 1.0,
    "deadline_check_seconds": 0.02,
    "batch_wait_seconds": 0.05,
    "replay_clock_poll_seconds": 0.02,
}


def feed_settings(**overrides: Any) -> FeedSettings:
    return FeedSettings(**{**FAST, **overrides})


def exchange_settings(sim: Simulator, **overrides: Any) -> ExchangeSettings:
    return ExchangeSettings(**{**sim.exchange_section(), **overrides})


def truth(sim: Simulator, symbol: str, after_ms: int | None = None) -> list[tuple[Any, ...]]:
    rows = [tuple(r) for r in sim.closed_bars(symbol)]
    return [r for r in rows if after_ms is None or r[0] > after_ms]


def as_row(candle: Candle) -> tuple[Any, ...]:
    return (candle.open_ms, candle.open, candle.high, candle.low, candle.close, candle.volume)


@dataclass
class RunningFeed:
    """A CandleFeed running as a task, with everything it delivered."""

    feed: CandleFeed
    metrics: Metrics
    batches: list[list[Candle]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def delivered(self, symbol: str) -> list[Candle]:
        return [c for batch in self.batches for c in batch if c.symbol == symbol]

    def rows(self, symbol: str) -> list[tuple[Any, ...]]:
        return [as_row(c) for c in self.delivered(symbol)]

    def last(self) -> dict[Series, int | None]:
        out: dict[Series, int | None] = {s: None for s in self.feed.series}
        for batch in self.batches:
            for candle in batch:
                out[candle.series] = candle.open_ms
        return out

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


async def start_feed(
    sim: Simulator,
    feed: FeedSettings | None = None,
    resume_from: Mapping[Series, int | None] | None = None,
    **kwargs: Any,
) -> RunningFeed:
    metrics = Metrics(process=False)
    exchange_overrides = kwargs.pop("exchange", {})
    running = RunningFeed(feed=None, metrics=metrics)  # type: ignore[arg-type]

    async def on_closed(candles: list[Candle]) -> None:
        running.batches.append(list(candles))

    running.feed = CandleFeed(
        exchange_settings(sim, **exchange_overrides),
        feed or feed_settings(),
        metrics,
        on_closed,
        resume_from,
        **kwargs,
    )
    running.task = asyncio.create_task(running.feed.run())
    return running


def subscribed_streams(sim: Simulator) -> int:
    """Streams subscribed on the simulator's open exchange connections."""
    return sum(len(conn.streams) for conn in sim.stream.hub.connections.values())


async def wait_subscribed(sim: Simulator, count: int | None = None) -> None:
    wanted = len(sim.symbols) if count is None else count
    await wait_until(lambda: subscribed_streams(sim) >= wanted, what="subscriptions")
