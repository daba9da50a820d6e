"""Online scoring: each published prediction is scored when its outcome bar closes.

A prediction made from the closed bar opening at ``bar_open_ms`` is about the
bar opening at ``bar_close_ms``. When that bar closes:

- ``p_up_next_bar``: a hit when ``(p >= 0.5) == (close_next > close)``;
- ``next_bar_volume``: the error ``|log1p(predicted) - log1p(actual)|``.

Scores roll over the last ``scoring_window`` per model into
``whalecast_live_accuracy_ratio`` / ``whalecast_live_log_volume_mae`` (and
``whalecast_live_scored_total``), so drift shows in Grafana.

The bar loop hands every stored bar to :meth:`LiveScorer.stored` and, after
each publish, what it published to :meth:`LiveScorer.published`: the bars are
scored then (off the bar's critical path), before the new predictions are kept
(a prediction is kept only once the scorer has seen the bar it was made from).
Pending predictions live in memory, at most ``max_pending`` (oldest series
dropped first); a prediction whose outcome bar never comes (a gap) is dropped
when a later bar of its series arrives.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from inference.publisher import PredictionOut
from whalecast.domain import Candle, Series
from whalecast.metrics import Metrics
from whalecast.targets import DIRECTION

#: Stored bars held until the next publish, at most (a long backfill publishes nothing).
HELD_MAX = 100_000


@dataclass(frozen=True, slots=True)
class Pending:
    model: str
    target: str
    value: float
    close: float


class Rolling:
    """Mean of the last ``size`` scores, O(1) per score.

    A running sum; it is recomputed exactly every ``size`` scores, so rounding
    errors cannot pile up over a long run.
    """

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.total = 0.0
        self._since_exact = 0

    def add(self, value: float) -> None:
        if len(self.values) == self.values.maxlen:
            self.total -= self.values[0]
        self.values.append(value)
        self.total += value
        self._since_exact += 1
        if self._since_exact >= len(self.values):
            self.total = math.fsum(self.values)
            self._since_exact = 0

    def mean(self) -> float:
        return self.total / len(self.values)


def direction_hit(p_up: float, close: float, close_next: float) -> float:
    return 1.0 if (p_up >= 0.5) == (close_next > close) else 0.0


def log_volume_error(predicted: float, actual: float) -> float:
    return abs(math.log1p(max(predicted, 0.0)) - math.log1p(max(actual, 0.0)))


class LiveScorer:
    def __init__(self, window: int, metrics: Metrics, max_pending: int = 200_000) -> None:
        self.window = window
        self.metrics = metrics
        self.max_pending = max_pending
        self._closes: dict[str, tuple[int, float]] = {}
        # series tag -> outcome bar open time -> predictions waiting for it
        self._pending: OrderedDict[str, dict[int, list[Pending]]] = OrderedDict()
        self._count = 0
        self._scores: dict[str, Rolling] = {}
        self._held: list[tuple[Series, int, float, float]] = []  # stored, not observed yet

    @property
    def pending(self) -> int:
        return self._count

    def stored(self, candles: Iterable[Candle]) -> None:
        """Bars just stored: observed at the next :meth:`published`."""
        self._held.extend((c.series, c.open_ms, c.close, c.volume) for c in candles)
        if len(self._held) > HELD_MAX:
            self.published([])

    def published(self, predictions: Iterable[PredictionOut]) -> None:
        """Score earlier predictions against the bars stored since, then keep these."""
        held, self._held = self._held, []
        self.observe_bars(held)
        self.expect(predictions)

    def observe_bar(self, series: Series, open_ms: int, close: float, volume: float) -> int:
        """Score what waited for this bar; remember its close. Returns how many were scored."""
        return self.observe_bars([(series, open_ms, close, volume)])

    def observe_bars(self, bars: Iterable[tuple[Series, int, float, float]]) -> int:
        """:meth:`observe_bar` for many ``(series, open_ms, close, volume)``; the gauges are
        set once per model at the end (a bar of a thousand series is one call)."""
        scored: dict[tuple[str, str], int] = {}
        for series, open_ms, close, volume in bars:
            for item in self._due(series.tag, open_ms, close):
                self._score(item, close, volume)
                scored[item.model, item.target] = scored.get((item.model, item.target), 0) + 1
        for (model, target), count in scored.items():
            self.metrics.live_scored.labels(model).inc(count)
            self._export(model, target)
        return sum(scored.values())

    def _due(self, tag: str, open_ms: int, close: float) -> list[Pending]:
        """Predictions waiting for this bar (taken out); stale ones dropped; close remembered."""
        self._closes[tag] = (open_ms, close)
        waiting = self._pending.get(tag)
        if not waiting:
            return []
        due = waiting.pop(open_ms, [])
        for stale in [t for t in waiting if t < open_ms]:
            self._count -= len(waiting.pop(stale))
        if not waiting:
            del self._pending[tag]
        self._count -= len(due)
        return due

    def expect(self, predictions: Iterable[PredictionOut]) -> int:
        """Keep published predictions until their outcome bar; returns how many are kept."""
        kept = 0
        closes, pending = self._closes, self._pending
        for p in predictions:
            tag = p.series.tag
            last = closes.get(tag)
            if last is None or last[0] != p.bar_open_ms or not math.isfinite(p.value):
                continue  # the bar it was made from was never seen here: cannot be scored
            waiting = pending.get(tag)
            if waiting is None:
                waiting = pending[tag] = {}
            else:
                pending.move_to_end(tag)
            item = Pending(p.model, p.target, p.value, last[1])
            due = waiting.get(p.bar_close_ms)
            if due is None:
                waiting[p.bar_close_ms] = [item]
            else:
                due.append(item)
            kept += 1
        self._count += kept
        self._bound()
        return kept

    def _bound(self) -> None:
        while self._count > self.max_pending and self._pending:
            _, waiting = self._pending.popitem(last=False)
            self._count -= sum(len(items) for items in waiting.values())

    def _score(self, item: Pending, close_next: float, volume: float) -> None:
        if item.target == DIRECTION:
            score = direction_hit(item.value, item.close, close_next)
        else:
            score = log_volume_error(item.value, volume)
        rolling = self._scores.get(item.model)
        if rolling is None:
            rolling = self._scores[item.model] = Rolling(self.window)
        rolling.add(score)

    def _export(self, model: str, target: str) -> None:
        gauge = self.metrics.live_accuracy if target == DIRECTION else self.metrics.live_mae
        gauge.labels(model).set(self._scores[model].mean())

    def rolling(self, model: str) -> float | None:
        scores = self._scores.get(model)
        return scores.mean() if scores else None
