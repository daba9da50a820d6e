"""What the web page shows, kept in memory by ``whalecast ui``: pure, no I/O.

:class:`Board` is fed prediction messages (``whalecast.prediction/v1``, as read from
the latest-value hashes and the stream) and newest closes; it keeps one row per
series (latest direction probability and next-bar volume, the bar they were made
from, its close) and, per series and target (per output for a horizon model,
``volume_next_bars|6|0.9``), the last ``history_bars`` predictions for the series
view. Rows that changed since the last :meth:`Board.take_changed`
are what the server pushes to browsers. A message that does not parse is counted
and dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from whalecast.domain import Series
from whalecast.keys import output_label
from whalecast.schema import Prediction
from whalecast.targets import DIRECTION, VOLUME

#: The row field each target fills.
TARGET_FIELD = {DIRECTION: "p_up", VOLUME: "volume"}


@dataclass
class Row:
    series: Series
    bar_open_ms: int = 0
    published_ms: int = 0
    p_up: float | None = None
    p_up_model: str | None = None
    volume: float | None = None
    volume_model: str | None = None
    close: float | None = None
    close_open_ms: int | None = None

    def as_json(self) -> dict[str, Any]:
        s = self.series
        return {
            "tag": s.tag, "exchange": s.exchange, "symbol": s.symbol, "timeframe": s.timeframe,
            "bar_open_ms": self.bar_open_ms, "published_ms": self.published_ms,
            "p_up": self.p_up, "p_up_model": self.p_up_model,
            "volume": self.volume, "volume_model": self.volume_model,
            "close": self.close, "close_open_ms": self.close_open_ms,
        }  # fmt: skip


@dataclass
class History:
    """One series' recent predictions per target: bar open time -> (value, model version)."""

    limit: int
    by_target: dict[str, OrderedDict[int, tuple[float, str]]] = field(default_factory=dict)

    def add(self, target: str, bar_open_ms: int, value: float, version: str) -> None:
        bars = self.by_target.setdefault(target, OrderedDict())
        newest = next(reversed(bars), bar_open_ms)
        bars[bar_open_ms] = (value, version)
        if bar_open_ms < newest:  # arrived out of order: keep the bars sorted
            self.by_target[target] = bars = OrderedDict(sorted(bars.items()))
        while len(bars) > self.limit:
            bars.popitem(last=False)

    def as_json(self) -> dict[str, list[dict[str, Any]]]:
        return {
            target: [{"bar_open_ms": t, "value": v, "version": ver} for t, (v, ver) in bars.items()]
            for target, bars in self.by_target.items()
        }


def history_key(m: Prediction) -> str:
    """The series chart's line of a message: its target, and for a horizon output its
    horizon and quantile too (``volume_next_bars|6|0.9``)."""
    if m.horizon_bars is None:
        return m.target
    return output_label(m.target, m.horizon_bars, m.quantile)


class Board:
    def __init__(self, history_bars: int) -> None:
        self.history_bars = history_bars
        self.rows: dict[str, Row] = {}
        self.histories: dict[str, History] = {}
        self.changed: set[str] = set()
        self.malformed = 0

    def add_raw(self, raw: str | bytes) -> str | None:
        """Apply one message as read from Redis; the series tag, or None if dropped."""
        try:
            message = Prediction.parse(raw)
        except (ValidationError, ValueError):
            self.malformed += 1
            return None
        return self.add(message)

    def add(self, m: Prediction) -> str:
        series = Series(m.exchange, m.symbol, m.timeframe)
        tag = series.tag
        row = self.rows.get(tag)
        if row is None:
            row = self.rows[tag] = Row(series)
            self.histories[tag] = History(self.history_bars)
        self.histories[tag].add(history_key(m), m.bar_open_ms, m.value, m.model_version)
        if m.bar_open_ms < row.bar_open_ms:
            return tag  # an older bar (backfill from the stream): history only
        if m.horizon_bars is not None:
            self.changed.add(tag)  # the series' chart has news; its row keeps the v1 values
            return tag
        if m.bar_open_ms > row.bar_open_ms:
            row.bar_open_ms = m.bar_open_ms
            row.p_up = row.volume = None
        name = TARGET_FIELD[m.target]
        setattr(row, name, m.value)
        setattr(row, f"{name}_model", m.model)
        row.published_ms = max(row.published_ms, m.published_ms)
        self.changed.add(tag)
        return tag

    def set_close(self, tag: str, open_ms: int, close: float) -> None:
        row = self.rows.get(tag)
        if row is not None and (row.close_open_ms is None or open_ms >= row.close_open_ms):
            row.close, row.close_open_ms = close, open_ms
            self.changed.add(tag)

    def take_changed(self) -> list[Row]:
        rows = [self.rows[tag] for tag in sorted(self.changed)]
        self.changed.clear()
        return rows

    def snapshot(self) -> list[dict[str, Any]]:
        return [row.as_json() for row in self.rows.values()]
