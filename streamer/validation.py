"""Validation at the boundary: every candle is checked here before anything uses it.

A rejected candle is counted in ``feed_rejected{feed, reason}`` and dropped;
nothing here raises on bad input. Reasons are the bounded labels in
``whalecast.metrics.REJECT_REASONS``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from streamer.clock import Clock
from whalecast.domain import Candle, Series
from whalecast.metrics import REJECT_REASONS, Metrics
from whalecast.settings import FeedSettings

DAY_MS = 86_400_000


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def candle_from_row(series: Series, row: Sequence[object], closed: bool) -> Candle | None:
    """A ``[open_ms, open, high, low, close, volume, ...]`` row as a Candle; None if malformed.

    Numbers may be JSON numbers or decimal strings (Binance sends prices as
    strings); anything else, or a missing field, is malformed.
    """
    if len(row) < 6:
        return None
    open_ms = row[0]
    if isinstance(open_ms, bool) or not isinstance(open_ms, int | float):
        return None
    if isinstance(open_ms, float) and not (math.isfinite(open_ms) and open_ms.is_integer()):
        return None
    values = [_number(v) for v in row[1:6]]
    if any(v is None for v in values):
        return None
    o, h, low, c, v = (float(x) for x in values if x is not None)
    return Candle(
        series.exchange, series.symbol, series.timeframe, int(open_ms), o, h, low, c, v, closed
    )


class CandleValidator:
    """Checks values, grid and time window; counts each rejection by reason."""

    def __init__(
        self, feed: FeedSettings, clock: Clock, metrics: Metrics, label: str = "candles"
    ) -> None:
        self._future_ms = int(feed.max_future_seconds * 1000)
        self._max_age_ms = int(feed.max_age_days * DAY_MS)
        self._clock = clock
        self._rejected = {
            reason: metrics.feed_rejected.labels(label, reason) for reason in REJECT_REASONS
        }

    def problem(self, candle: Candle, check_future: bool = True) -> str | None:
        reason = candle.problem()
        if reason is not None:
            return reason
        if not math.isfinite(candle.volume * candle.close):
            return "non_finite"  # its dollar volume (a feature) would be infinite
        now = self._clock.now_ms()
        if check_future and candle.open_ms > now + self._future_ms + self._clock.slack_ms():
            return "from_future"
        if candle.open_ms < now - self._max_age_ms:
            return "too_old"
        return None

    def accept(self, candle: Candle | None, check_future: bool = True) -> bool:
        """True when the candle is usable; otherwise counts the reason and returns False.

        REST answers skip the future check: the exchange serves nothing past its own
        now, and a row past ours (a lagging replay clock) is simply not closed yet.
        """
        if candle is None:
            self.reject("malformed")
            return False
        reason = self.problem(candle, check_future)
        if reason is None:
            return True
        self.reject(reason)
        return False

    def reject(self, reason: str) -> None:
        self._rejected[reason].inc()
