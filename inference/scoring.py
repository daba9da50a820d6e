"""Online scoring: each published prediction is scored when its outcome bar closes.

A prediction made from the closed bar opening at ``bar_open_ms`` is about the
bar opening at ``bar_close_ms``. When that bar closes:

- ``p_up_next_bar``: a hit when ``(p >= 0.5) == (close_next > close)``;
- ``next_bar_volume``: the error ``|log1p(predicted) - log1p(actual)|``.

Scores roll over the last ``scoring_window`` per model into
``whalecast_live_accuracy_ratio`` / ``whalecast_live_log_volume_mae`` (and
``whalecast_live_scored_total``), so drift shows in Grafana.

A horizon output (``horizon_bars`` ``h`` set) waits for the ``h``-th bar after the one it
is about, and is scored then by :mod:`inference.horizon_scores` (pinball loss and
coverage of volume quantiles, Brier score and hit rate of direction): the scorer keeps
each series' last volumes, as many as the longest horizon waiting, and a prediction
whose ``h`` bars are not all there (a gap) is dropped, not scored.

The bar loop hands every stored bar to :meth:`LiveScorer.stored` and, after
each publish, what it published to :meth:`LiveScorer.published`: the bars are
scored then (off the bar's critical path), before the new predictions are kept
(a prediction is kept only once the scorer has seen the bar it was made from).
Pending predictions live in memory, at most ``max_pending``, or by default
``PENDING_PER_SERIES`` for each series seen (at least ``PENDING_FLOOR``): a
24-bar horizon waits 24 bars, so a series with the horizon models keeps about 70
at once, and a fixed bound would stop scoring above some number of series. Past
the bound the series that published least recently are dropped first; a
prediction whose outcome bar never comes (a gap) is dropped when a later bar of
its series arrives.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from inference.horizon_scores import HorizonScores, Output
from inference.publisher import PredictionOut
from inference.score_math import Rolling, direction_hit, log_volume_error
from whalecast.domain import Candle, Series
from whalecast.metrics import Metrics
from whalecast.targets import DIRECTION, PROBABILITY_TARGETS

__all__ = [
    "HELD_MAX",
    "PENDING_PER_SERIES",
    "LiveScorer",
    "Pending",
    "Rolling",
    "direction_hit",
    "log_volume_error",
]

#: Stored bars held until the next publish, at most (a long backfill publishes nothing).
HELD_MAX = 100_000
#: The default bound on pending predictions: this many per series seen (v1 models keep one
#: each; ``volume-horizons`` 62 over 24 bars, ``direction-horizons`` 7), at least the floor.
PENDING_PER_SERIES = 128
PENDING_FLOOR = 200_000


@dataclass(frozen=True, slots=True)
class Pending:
    """A published prediction waiting for its outcome; ``horizon`` None for a v1 output."""

    model: str
    target: str
    value: float
    close: float
    horizon: int | None = None
    quantile: float | None = None


class LiveScorer:
    def __init__(self, window: int, metrics: Metrics, max_pending: int | None = None) -> None:
        self.window = window
        self.metrics = metrics
        self._max_pending = max_pending
        self._closes: dict[str, tuple[int, float]] = {}
        # series tag -> outcome bar open time -> predictions waiting for it
        self._pending: OrderedDict[str, dict[int, list[Pending]]] = OrderedDict()
        self._count = 0
        self._scores: dict[str, Rolling] = {}
        self._held: list[tuple[Series, int, float, float]] = []  # stored, not observed yet
        self.horizons = HorizonScores(window, metrics)
        self._longest = 1  # the longest horizon seen: how many volumes each series keeps
        self._volumes: dict[str, deque[tuple[int, float]]] = {}  # tag -> (open ms, volume)

    @property
    def pending(self) -> int:
        return self._count

    @property
    def max_pending(self) -> int:
        """The bound now: as given, or scaled with the series seen."""
        if self._max_pending is not None:
            return self._max_pending
        return max(PENDING_FLOOR, PENDING_PER_SERIES * len(self._closes))

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
        scored: dict[str, int] = {}
        v1: set[tuple[str, str]] = set()
        outputs: set[Output] = set()
        for series, open_ms, close, volume in bars:
            if self._longest > 1:
                self._keep_volume(series.tag, open_ms, volume)
            for item in self._due(series.tag, open_ms, close):
                if item.horizon is None:
                    self._score(item, close, volume)
                    v1.add((item.model, item.target))
                elif self._score_horizon(item, series, open_ms, close, volume):
                    outputs.add((item.model, item.target, item.horizon, item.quantile))
                else:
                    continue  # a bar of its horizon is missing: dropped, not scored
                scored[item.model] = scored.get(item.model, 0) + 1
        for model, count in scored.items():
            self.metrics.live_scored.labels(model).inc(count)
        for model, target in v1:
            self._export(model, target)
        self.horizons.export(outputs)
        return sum(scored.values())

    def _keep_volume(self, tag: str, open_ms: int, volume: float) -> None:
        kept = self._volumes.get(tag)
        if kept is None or kept.maxlen != self._longest:
            kept = self._volumes[tag] = deque(kept or (), maxlen=self._longest)
        kept.append((open_ms, volume))

    def _score_horizon(
        self, item: Pending, series: Series, open_ms: int, close: float, volume: float
    ) -> bool:
        """Score a horizon output at its last bar; False when a bar of it is missing."""
        horizon = item.horizon or 1
        output = (item.model, item.target, horizon, item.quantile)
        if item.target in PROBABILITY_TARGETS:
            self.horizons.direction(output, item.value, item.close, close)
            return True
        total = volume
        if horizon > 1:
            kept = list(self._volumes.get(series.tag, ()))[-horizon:]
            first = open_ms - (horizon - 1) * series.bar_ms
            if [t for t, _ in kept] != list(range(first, open_ms + 1, series.bar_ms)):
                return False
            total = math.fsum(v for _, v in kept)
        self.horizons.volume(output, item.value, total)
        return True

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
            outcome = p.bar_close_ms
            if p.horizon_bars is None:
                item = Pending(p.model, p.target, p.value, last[1])
            else:
                item = Pending(p.model, p.target, p.value, last[1], p.horizon_bars, p.quantile)
                outcome += (p.horizon_bars - 1) * p.series.bar_ms
                self._longest = max(self._longest, p.horizon_bars)
            due = waiting.get(outcome)
            if due is None:
                waiting[outcome] = [item]
            else:
                due.append(item)
            kept += 1
        self._count += kept
        self._bound()
        return kept

    def _bound(self) -> None:
        limit = self.max_pending
        while self._count > limit and self._pending:
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
