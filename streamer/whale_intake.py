"""The daemon's end of the whale feed: knowledge times in, per-bar aggregates out, all counted.

:class:`WhaleIntake` stamps each alert with its knowledge time (exchange time, never
inside a bar whose aggregates the bar loop already read: :class:`KnowledgeClock`),
adds the transfers to the :class:`WhaleBarAggregator`, and counts each one either in
``whalecast_whale_transfers_total{flow}`` (it reached a bar) or in
``whalecast_feed_rejected_total{feed="whale", reason}`` (``unused_asset``: no series
and no stablecoin sum uses its asset; ``late``: its bar is no longer kept).
``take`` is the bar loop's ``whale_for``: reading a bar seals it. ``restore`` puts back,
at start-up, what a recording holds for bars not stored yet.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from streamer.whale_bars import DAY_MS, WhaleBarAggregator
from streamer.whale_record import recent_entries, recorded_transfers
from streamer.whale_rule import KnowledgeClock
from whalecast.domain import Flow, Series, WhaleBar, WhaleTransfer
from whalecast.logs import get_logger
from whalecast.metrics import Metrics

log = get_logger(__name__)


class WhaleIntake:
    """Whale transfers into bars, with a count for every one of them."""

    def __init__(self, aggregator: WhaleBarAggregator, metrics: Metrics) -> None:
        self.aggregator = aggregator
        self.clock = KnowledgeClock()
        self._reached = {f: metrics.whale_transfers.labels(f.value) for f in Flow}
        self._refused = {
            r: metrics.feed_rejected.labels("whale", r) for r in ("unused_asset", "late")
        }

    def stamp(self, now_ms: int) -> int:
        """Knowledge time of an alert handled at exchange time ``now_ms``."""
        return self.clock.stamp(now_ms)

    async def add(self, transfers: Sequence[WhaleTransfer]) -> None:
        """The feed's ``on_transfers``: every transfer into its bars, or counted as refused."""
        for transfer in transfers:
            reason = self.aggregator.add(transfer)
            if reason is None:
                self._reached[transfer.flow].inc()
            else:
                self._refused[reason].inc()

    def take(self, series: Series, open_ms: int) -> WhaleBar:
        """The whale aggregates of one series' bar; the bar is final from now on."""
        self.clock.seal(open_ms + series.bar_ms)
        return self.aggregator.take(series, open_ms)

    def restore_recording(self, path: Path, stored: Mapping[Series, int | None]) -> int:
        """At start-up: the recorded transfers of bars not stored yet by every series
        (``stored``: each series' newest stored bar). A restart mid-bar loses none."""
        pending = [last + series.bar_ms for series, last in stored.items() if last is not None]
        since = min(pending) if pending else int(time.time() * 1000) - DAY_MS
        restored = self.restore(recent_entries(path, since))
        log.info("whale transfers restored from the recording", path=str(path),
                 since_ms=since, transfers=restored)  # fmt: skip
        return restored

    def restore(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Recorded alerts back into their bars (not counted again: an earlier process did).
        The number of transfers restored."""
        restored = 0
        for transfer in recorded_transfers(entries).transfers:
            restored += self.aggregator.add(transfer) is None
        return restored
