"""Scores of quantile forecasts, and the rule that promotes a quantile model.

A volume forecast at one horizon is an ``(n, 2)`` array in log1p units: column 0 the
median (p50), column 1 the 90th percentile (p90). Its metrics, all in log space:

- ``mae``: mean absolute error of the p50 (the point metric of the next-bar models);
- ``pinball_50`` / ``pinball_90``: the quantile (pinball) loss of each column, lower is
  better; it rewards a p90 that is both calibrated and sharp;
- ``coverage_90``: the share of outcomes at or below the p90 (0.9 when calibrated).

Every figure has the day-block bootstrap interval of :mod:`training.scoring`, and the
paired differences "model minus X" on the same resampled days; coverage has no
better/worse direction, so it gets no paired verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from training.scoring import BlockBootstrap, Metric, score

P50, P90 = 0, 1
COVERAGE = "coverage_90"
#: the held-out p90 coverage a promoted quantile model must reach
COVERAGE_BAND = (0.87, 0.93)


def pinball(y: np.ndarray, q: np.ndarray, level: float) -> float:
    miss = y - q
    return float(np.mean(np.maximum(level * miss, (level - 1.0) * miss)))


def _mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(y - p[:, P50])))


def _pinball_50(y: np.ndarray, p: np.ndarray) -> float:
    return pinball(y, p[:, P50], 0.5)


def _pinball_90(y: np.ndarray, p: np.ndarray) -> float:
    return pinball(y, p[:, P90], 0.9)


def _coverage(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(y <= p[:, P90]))


QUANTILE_METRICS: dict[str, Metric] = {
    "mae": _mae,
    "pinball_50": _pinball_50,
    "pinball_90": _pinball_90,
    COVERAGE: _coverage,
}


def score_quantiles(
    y: np.ndarray, preds: Mapping[str, np.ndarray], bootstrap: BlockBootstrap
) -> dict[str, Any]:
    """:func:`training.scoring.score` of the quantile metrics, coverage left unpaired."""
    scored = score(QUANTILE_METRICS, y, preds, bootstrap)
    for values in scored["paired"].values():
        values.pop(COVERAGE, None)
    return scored


# --- promotion ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HorizonVerdict:
    """Why one horizon passes or fails the quantile promotion rule."""

    horizon_bars: int
    best_p50: str  # the baseline with the lowest p50 MAE
    p50_verdict: str  # paired verdict of the model against it
    best_p90: str  # the baseline with the lowest p90 pinball loss
    pinball_90: float
    baseline_pinball_90: float
    coverage: float
    passes: bool
    failures: list[str]


def judge_horizon(
    horizon: int, pooled: Mapping[str, Any], baselines: list[str], significance: bool = True
) -> HorizonVerdict:
    """The rule on one horizon's pooled scores: the p50 beats the best baseline's on a paired
    interval below zero (with ``significance`` off, on the point values), the p90 pinball
    loss is below the best baseline's, and the p90 coverage lies in :data:`COVERAGE_BAND`."""
    models = pooled["models"]

    def value(name: str, metric: str) -> float:
        return float(models[name][metric]["value"])

    best_p50 = min(baselines, key=lambda b: value(b, "mae"))
    best_p90 = min(baselines, key=lambda b: value(b, "pinball_90"))
    verdict = str(pooled["paired"][best_p50]["mae"]["verdict"])
    if not significance and value("model", "mae") < value(best_p50, "mae"):
        verdict = "better"  # on the point values
    mine, theirs = value("model", "pinball_90"), value(best_p90, "pinball_90")
    coverage = value("model", COVERAGE)
    failures = []
    if verdict != "better":
        failures.append(f"{horizon}-bar p50 not better than {best_p50} ({verdict})")
    if not mine < theirs:
        failures.append(f"{horizon}-bar p90 pinball {mine:.5f} not below {best_p90}'s {theirs:.5f}")
    low, high = COVERAGE_BAND
    if not low <= coverage <= high:
        failures.append(f"{horizon}-bar p90 coverage {coverage:.3f} outside {low}-{high}")
    return HorizonVerdict(horizon, best_p50, verdict, best_p90, mine, theirs, coverage,
                          not failures, failures)  # fmt: skip


def verdicts_as_dicts(verdicts: list[HorizonVerdict]) -> list[dict[str, Any]]:
    return [asdict(v) for v in verdicts]
