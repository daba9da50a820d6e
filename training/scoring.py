"""Metrics and the day-block bootstrap behind every interval in a training report.

Hourly outcomes are autocorrelated within a day, so resampling single hours would give
intervals that are too narrow. The bootstrap resamples whole blocks (a day by default)
with replacement. One set of resampled blocks is drawn per report and reused for every
model and metric, so a model-minus-baseline difference is judged on a PAIRED interval:
both sides are scored on exactly the same resampled days.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

Metric = Callable[[np.ndarray, np.ndarray], float]
EPS = 1e-7


# --- volume: targets and predictions are log1p(volume) --------------------------------------


def mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(y - p)))


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - p) ** 2)))


def mape(y: np.ndarray, p: np.ndarray) -> float:
    """Mean absolute percentage error of volume itself (bars with zero volume left out)."""
    actual = np.expm1(y)
    keep = actual > 0
    if not keep.any():
        return float("nan")
    return float(np.mean(np.abs(np.expm1(p[keep]) - actual[keep]) / actual[keep]) * 100.0)


# --- direction: y is 0/1, p is P(up) --------------------------------------------------------


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p > 0.5) == (y > 0.5)))


def balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    up = y > 0.5
    hit = (p > 0.5) == up
    rates = [hit[mask].mean() for mask in (up, ~up) if mask.any()]
    return float(np.mean(rates)) if rates else float("nan")


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties count one half)."""
    up = y > 0.5
    n_pos = int(up.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[up].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


VOLUME_METRICS: dict[str, Metric] = {"mae": mae, "rmse": rmse, "mape": mape}
DIRECTION_METRICS: dict[str, Metric] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "auc": auc,
    "log_loss": log_loss,
}
HIGHER_IS_BETTER = frozenset({"accuracy", "balanced_accuracy", "auc"})


def better(metric: str, a: float, b: float, margin: float = 0.0) -> bool:
    """Is ``a`` better than ``b`` by more than ``margin`` on ``metric``?"""
    if metric in HIGHER_IS_BETTER:
        return a > b + margin
    return a < b - margin


# --- the block bootstrap -------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | None]:
        return {k: _finite_or_none(v) for k, v in vars(self).items()}

    def excludes(self, x: float) -> bool:
        return bool(self.low > x or self.high < x)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


class BlockBootstrap:
    """Resamples of whole blocks; ``blocks[i]`` is the block id of sample ``i``."""

    def __init__(self, blocks: np.ndarray, samples: int, seed: int) -> None:
        _, inverse = np.unique(blocks, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse)
        self.members = np.split(order, np.cumsum(counts)[:-1])
        rng = np.random.default_rng(seed)
        self.draws = rng.integers(0, len(self.members), size=(samples, len(self.members)))

    @property
    def n_blocks(self) -> int:
        return len(self.members)

    def resamples(self) -> Iterator[np.ndarray]:
        for draw in self.draws:
            yield np.concatenate([self.members[j] for j in draw])

    def distributions(
        self, metrics: Mapping[str, Metric], y: np.ndarray, preds: Mapping[str, np.ndarray]
    ) -> dict[str, dict[str, np.ndarray]]:
        """``out[metric][model]``: the metric on every resample (same resamples for all)."""
        out = {m: {name: np.empty(len(self.draws)) for name in preds} for m in metrics}
        for b, idx in enumerate(self.resamples()):
            y_b = y[idx]
            for name, p in preds.items():
                p_b = p[idx]
                for m, fn in metrics.items():
                    out[m][name][b] = fn(y_b, p_b)
        return out


def interval(point: float, draws: np.ndarray, level: float = 0.95) -> Estimate:
    finite = draws[np.isfinite(draws)]
    if len(finite) == 0 or not np.isfinite(point):
        return Estimate(point, float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Estimate(point, float(low), float(high))


def score(
    metrics: Mapping[str, Metric],
    y: np.ndarray,
    preds: Mapping[str, np.ndarray],
    bootstrap: BlockBootstrap,
    subject: str = "model",
) -> dict[str, Any]:
    """Point values with intervals for every model, and paired differences of ``subject``.

    ``paired[other][metric]`` is ``subject - other`` on the same resampled blocks, with its
    interval and a verdict: ``better`` / ``worse`` only when the interval excludes zero.
    """
    dist = bootstrap.distributions(metrics, y, preds)
    points = {name: {m: fn(y, p) for m, fn in metrics.items()} for name, p in preds.items()}
    models = {
        name: {m: interval(points[name][m], dist[m][name]).as_dict() for m in metrics}
        for name in preds
    }
    paired: dict[str, dict[str, Any]] = {}
    for other in preds:
        if other == subject:
            continue
        paired[other] = {}
        for m in metrics:
            diff = points[subject][m] - points[other][m]
            est = interval(diff, dist[m][subject] - dist[m][other])
            paired[other][m] = {**est.as_dict(), "verdict": _judge(m, est)}
    return {"models": models, "subject": subject, "paired": paired}


def _judge(metric: str, diff: Estimate) -> str:
    """``better``/``worse`` only when the paired interval excludes zero, else ``no difference``."""
    if not diff.excludes(0.0):
        return "no difference"
    improved = diff.low > 0 if metric in HIGHER_IS_BETTER else diff.high < 0
    return "better" if improved else "worse"
