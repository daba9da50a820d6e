"""The replayed market: every series on one virtual clock, and what is visible at "now".

The clock's cursor is the open time of the bar that is forming. Everything that
opened before it is closed and visible; the forming bar is visible at its current
progress (``fraction`` of the bar elapsed); nothing later exists yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.simulator.data import Bars

#: Fields of one candle as served: open, high, low, close, volume.
Ohlcv = tuple[float, float, float, float, float]


@dataclass(frozen=True)
class Candle:
    """One bar as the simulator serves it (closed, or forming at some progress)."""

    index: int
    open_ms: int
    ohlcv: Ohlcv
    trades: int
    closed: bool


def trade_count(index: int, fraction: float) -> int:
    """A deterministic, plausible number of trades in a bar (scaled while forming)."""
    return int((200 + (index * 7919) % 1800) * min(fraction, 1.0))


def partial(bars: Bars, i: int, fraction: float) -> Ohlcv:
    """Bar ``i`` as it looks after ``fraction`` of its time: converges to the real bar at 1."""
    o, h, l, c, v = (x.item(i) for x in (bars.open, bars.high, bars.low, bars.close, bars.volume))  # noqa: E741
    if fraction >= 1.0:
        return o, h, l, c, v
    f = max(fraction, 0.0)
    close = o + (c - o) * f
    high = max(o, close) + (h - max(o, c)) * f
    low = min(o, close) - (min(o, c) - l) * f
    return o, round(high, 8), round(low, 8), round(close, 8), round(v * f, 8)


class Market:
    """All replayed series plus the virtual clock (cursor and progress in the forming bar)."""

    def __init__(self, series: list[Bars], timeframe: str, bar_ms: int, start_ms: int) -> None:
        if not series:
            raise ValueError("the simulator needs at least one series")
        self.timeframe = timeframe
        self.bar_ms = bar_ms
        self.series = {b.symbol: b for b in series}
        if len(self.series) != len(series):
            raise ValueError("a symbol is given twice")
        self.by_wire = {b.wire: b for b in series}
        self.first_ms = min(int(b.open_ms[0]) for b in series)
        self.end_ms = max(int(b.open_ms[-1]) for b in series) + bar_ms
        self.cursor_ms = max(start_ms - start_ms % bar_ms, self.first_ms)
        self.fraction = 0.0

    @property
    def symbols(self) -> list[str]:
        return list(self.series)

    @property
    def now_ms(self) -> int:
        return min(self.cursor_ms + int(self.fraction * self.bar_ms), self.end_ms)

    @property
    def finished(self) -> bool:
        """Every bar of every series has closed."""
        return self.cursor_ms >= self.end_ms

    def closed_count(self, bars: Bars) -> int:
        """How many bars of ``bars`` have closed (they are ``bars[:count]``)."""
        return int(np.searchsorted(bars.open_ms, self.cursor_ms, side="left"))

    def forming_index(self, bars: Bars) -> int | None:
        i = self.closed_count(bars)
        if i < len(bars) and int(bars.open_ms[i]) == self.cursor_ms:
            return i
        return None

    def candle(self, bars: Bars, i: int) -> Candle:
        """Bar ``i`` as visible now: closed in full, or the forming one at its progress."""
        closed = int(bars.open_ms[i]) < self.cursor_ms
        fraction = 1.0 if closed else self.fraction
        return Candle(
            i, int(bars.open_ms[i]), partial(bars, i, fraction), trade_count(i, fraction), closed
        )

    def live(self) -> list[tuple[Bars, int]]:
        """``(series, index of its forming bar)`` for every series that has a bar forming."""
        return [(b, i) for b in self.series.values() if (i := self.forming_index(b)) is not None]

    def forming_candle(self, bars: Bars, i: int) -> Candle:
        """Bar ``i`` at the market's current progress, still open."""
        f = self.fraction
        return Candle(i, int(bars.open_ms[i]), partial(bars, i, f), trade_count(i, f), False)

    def closed_candle(self, bars: Bars, i: int) -> Candle:
        """Bar ``i`` in full, as its closed event carries it."""
        return Candle(i, int(bars.open_ms[i]), partial(bars, i, 1.0), trade_count(i, 1.0), True)

    def closed_bars(self, symbol: str) -> list[tuple[int, float, float, float, float, float]]:
        """The closed bars of ``symbol`` served so far: the ground truth tests compare with."""
        bars = self.series[symbol]
        return [bars.row(i) for i in range(self.closed_count(bars))]

    def visible_range(self, bars: Bars, start_ms: int | None, end_ms: int | None) -> range:
        """Indices of the bars visible now (closed + forming) with open time in [start, end]."""
        visible = self.closed_count(bars) + (self.forming_index(bars) is not None)
        lo = 0 if start_ms is None else int(np.searchsorted(bars.open_ms, start_ms, side="left"))
        hi = visible
        if end_ms is not None:
            hi = min(hi, int(np.searchsorted(bars.open_ms, end_ms, side="right")))
        return range(lo, max(lo, hi))

    def step(self) -> None:
        """Close the forming bar: the cursor moves one bar on."""
        self.cursor_ms += self.bar_ms
        self.fraction = 0.0
