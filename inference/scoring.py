"""Online scoring: each published prediction is scored when its outcome bar closes.

A prediction made from the closed bar opening at ``bar_open_ms`` is about the
bar opening at ``bar_close_ms``. When that bar closes:

- ``p_up_next_bar``: a hit when ``(p >= 0.5) == (close_next > close)``;
- ``next_bar_volume``: the error ``|log1p(predicted) - log1p(actual)|``.

Scores roll over the last ``scoring_window`` per model into
``whalecast_live_accuracy_ratio`` / ``whalecast_live_log_volume_mae`` (and
``whalecast_live_scored_total``), so drift shows in Grafana.

The bar loop calls :meth:`LiveScorer.observe_bar` for every closed bar (before
predicting from it) and :meth:`LiveScorer.expect` with what it published.
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
from whalecast.domain import Series
from whalecast.metrics import Metrics

DIRECTION = "p_up_next_bar"
VOLUME = "next_bar_volume"


@dataclass(frozen=True, slots=True)
class Pending:
    model: str
    target: str
    value: float
    close: float


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
        self._scores: dict[str, deque[float]] = {}

    @property
    def pending(self) -> int:
        return self._count

    def observe_bar(self, series: Series, open_ms: int, close: float, volume: float) -> int:
        """Score what waited for this bar; remember its close. Returns how many were scored."""
        tag = series.tag
        self._closes[tag] = (open_ms, close)
        waiting = self._pending.get(tag)
        if not waiting:
            return 0
        due = waiting.pop(open_ms, [])
        for stale in [t for t in waiting if t < open_ms]:
            self._count -= len(waiting.pop(stale))
        if not waiting:
            del self._pending[tag]
        self._count -= len(due)
        touched = set()
        for item in due:
            self._score(item, close, volume)
            touched.add((item.model, item.target))
        for model, target in touched:
            self._export(model, target)
        return len(due)

    def expect(self, predictions: Iterable[PredictionOut]) -> int:
        """Keep published predictions until their outcome bar; returns how many are kept."""
        kept = 0
        for p in predictions:
            last = self._closes.get(p.series.tag)
            if last is None or last[0] != p.bar_open_ms or not math.isfinite(p.value):
                continue  # the bar it was made from was never seen here: cannot be scored
            waiting = self._pending.setdefault(p.series.tag, {})
            self._pending.move_to_end(p.series.tag)
            waiting.setdefault(p.bar_close_ms, []).append(
                Pending(p.model, p.target, p.value, last[1])
            )
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
        self._scores.setdefault(item.model, deque(maxlen=self.window)).append(score)
        self.metrics.live_scored.labels(item.model).inc()

    def _export(self, model: str, target: str) -> None:
        scores = self._scores[model]
        mean = sum(scores) / len(scores)
        gauge = self.metrics.live_accuracy if target == DIRECTION else self.metrics.live_mae
        gauge.labels(model).set(mean)

    def rolling(self, model: str) -> float | None:
        scores = self._scores.get(model)
        return sum(scores) / len(scores) if scores else None
