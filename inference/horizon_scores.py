"""Live scores of the horizon outputs (``horizon_bars`` set): the arithmetic and the gauges.

A prediction made from the bar that closes at ``bar_close_ms`` about ``h`` bars is
scored when the ``h``-th bar after it closes (the one opening at ``bar_close_ms +
(h - 1) * bar``), against:

- ``p_up_in_bars`` (and ``p_up_next_bar`` when published with a horizon): whether that
  bar's close is above the close the prediction was made at; the Brier score
  ``(p - y)^2`` and the hit rate (``p >= 0.5`` said up);
- ``volume_next_bars``: the total volume of the ``h`` bars; with a quantile ``q``, the
  pinball loss of ``log1p`` of it (``max(q * e, (q - 1) * e)``, ``e = log1p(actual) -
  log1p(predicted)``) and whether the outcome was at or below the predicted quantile
  (its coverage: about ``q`` for a calibrated quantile); without one, the absolute
  error of ``log1p`` (as the v1 volume score).

Each score rolls over the last ``window`` per model and output into gauges labelled
model, horizon and quantile (no series label): ``whalecast_live_log_volume_pinball``,
``whalecast_live_quantile_coverage_ratio``, ``whalecast_live_horizon_log_volume_mae``,
``whalecast_live_direction_brier`` and ``whalecast_live_direction_hit_ratio``.
"""

from __future__ import annotations

from typing import Any

from inference.score_math import Rolling, brier, direction_hit, log_volume_error, pinball
from whalecast.metrics import Metrics
from whalecast.targets import PROBABILITY_TARGETS

#: (model, target, horizon_bars, quantile): one output of one model
Output = tuple[str, str, int, float | None]


class HorizonScores:
    """The rolling scores of every horizon output, exported as gauges."""

    def __init__(self, window: int, metrics: Metrics) -> None:
        self.window = window
        self.metrics = metrics
        self._rolling: dict[tuple[Output, str], Rolling] = {}

    def direction(self, output: Output, p_up: float, close: float, close_later: float) -> None:
        self._add(output, "brier", brier(p_up, close, close_later))
        self._add(output, "hit", direction_hit(p_up, close, close_later))

    def volume(self, output: Output, predicted: float, actual: float) -> None:
        quantile = output[3]
        if quantile is None:
            self._add(output, "mae", log_volume_error(predicted, actual))
            return
        self._add(output, "pinball", pinball(quantile, predicted, actual))
        self._add(output, "coverage", 1.0 if actual <= predicted else 0.0)

    def export(self, outputs: set[Output]) -> None:
        """Set the gauges of ``outputs`` (those scored since the last export)."""
        m = self.metrics
        for output in outputs:
            model, target, horizon, quantile = output
            h = str(horizon)
            if target in PROBABILITY_TARGETS:
                self._set(m.live_brier.labels(model, h), output, "brier")
                self._set(m.live_horizon_hits.labels(model, h), output, "hit")
            elif quantile is None:
                self._set(m.live_horizon_mae.labels(model, h), output, "mae")
            else:
                q = repr(quantile)
                self._set(m.live_pinball.labels(model, h, q), output, "pinball")
                self._set(m.live_coverage.labels(model, h, q), output, "coverage")

    def mean(self, output: Output, kind: str) -> float | None:
        """The rolling mean of one score of one output (``brier``, ``hit``, ``mae``,
        ``pinball``, ``coverage``), or None before its first."""
        rolling = self._rolling.get((output, kind))
        return rolling.mean() if rolling else None

    def _set(self, gauge: Any, output: Output, kind: str) -> None:
        mean = self.mean(output, kind)
        if mean is not None:
            gauge.set(mean)

    def _add(self, output: Output, kind: str, score: float) -> None:
        rolling = self._rolling.get((output, kind))
        if rolling is None:
            rolling = self._rolling[output, kind] = Rolling(self.window)
        rolling.add(score)
