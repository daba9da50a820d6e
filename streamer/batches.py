"""Closed candles handed on in batches: the bars of one close together.

The sequencer emits each closed bar once, in order per series
(:meth:`CloseBatches.add`). :meth:`CloseBatches.run` waits for the first, then up to
``feed.batch_wait_seconds`` more until every series has its bar of the newest
close, and hands the batch (sorted by open time, each series still in order, at
most ``MAX_BATCH_CANDLES`` at a time) to ``on_closed``. A batch ``on_closed``
fails on is handed over again after a backoff: it is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from streamer.backoff import Backoff
from whalecast.domain import Candle
from whalecast.logs import get_logger
from whalecast.settings import FeedSettings

log = get_logger(__name__)

OnClosed = Callable[[list[Candle]], Awaitable[None]]
MAX_BATCH_CANDLES = 10_000


class CloseBatches:
    """Gathers emitted candles and delivers them to ``on_closed``, one close at a time."""

    def __init__(self, series_count: int, feed: FeedSettings, on_closed: OnClosed) -> None:
        self.series_count = series_count
        self.feed = feed
        self._on_closed = on_closed
        self._pending: list[Candle] = []
        self._newest = -1
        self._at_newest = 0
        self._added = asyncio.Event()

    def add(self, candle: Candle, source: str) -> None:
        """One closed bar, from the sequencer (``source``: what proved it closed)."""
        self._pending.append(candle)
        if candle.open_ms > self._newest:
            self._newest = candle.open_ms
            self._at_newest = 1
        elif candle.open_ms == self._newest:
            self._at_newest += 1
        self._added.set()

    async def run(self) -> None:
        """Runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await self._added.wait()
            until = loop.time() + self.feed.batch_wait_seconds
            while self._at_newest < self.series_count:
                self._added.clear()
                remaining = until - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._added.wait(), remaining)
            batch, self._pending = self._pending, []
            self._newest, self._at_newest = -1, 0
            self._added.clear()
            batch.sort(key=lambda c: c.open_ms)  # stable: each series stays in order
            for start in range(0, len(batch), MAX_BATCH_CANDLES):
                await self._deliver(batch[start : start + MAX_BATCH_CANDLES])

    async def _deliver(self, candles: list[Candle]) -> None:
        backoff = Backoff.from_settings(self.feed)
        while True:
            try:
                await self._on_closed(candles)
                return
            except Exception as e:  # noqa: BLE001 - callback boundary: the batch is retried, never lost
                delay = backoff.delay()
                log.error("on_closed failed, retrying the batch", error=repr(e),
                          candles=len(candles), retry_seconds=round(delay, 3))  # fmt: skip
                await asyncio.sleep(delay)
