"""Evaluation on the held-out test period, pooled and per series, always beside baselines.

Every figure carries a day-block bootstrap 95% interval; every model-minus-baseline
difference is a paired interval on the same resampled days (see :mod:`training.scoring`).
Paired differences are always "the model minus X" for every baseline X (and the version
in service, when there is one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import classification_report

from training.baselines import HARD_LABELS
from training.dataset import Samples, SeriesData
from training.scoring import (
    DIRECTION_METRICS,
    VOLUME_METRICS,
    BlockBootstrap,
    Metric,
    score,
)
from whalecast.targets import VOLUME


def metrics_for(target: str) -> dict[str, Metric]:
    return VOLUME_METRICS if target == VOLUME else DIRECTION_METRICS


def truth(target: str, samples: Samples) -> np.ndarray:
    return samples.y_log_volume if target == VOLUME else samples.y_up.astype(np.float64)


def _drop_undefined(scored: dict[str, Any]) -> dict[str, Any]:
    """Log loss of hard 0/1 predictions is not a meaningful number: leave it out."""
    for section in ("models", "paired"):
        for name, values in scored[section].items():
            if name in HARD_LABELS:
                values.pop("log_loss", None)
    return scored


def score_all(
    target: str,
    samples: Samples,
    preds: Mapping[str, np.ndarray],
    data: Sequence[SeriesData],
    *,
    bootstrap_samples: int,
    block_ms: int,
    seed: int,
) -> dict[str, Any]:
    """Pooled and per-series scores with intervals and paired differences."""
    metrics = metrics_for(target)
    y = truth(target, samples)
    blocks = samples.target_ms // block_ms
    pooled = score(metrics, y, preds, BlockBootstrap(blocks, bootstrap_samples, seed))
    out: dict[str, Any] = {
        "samples": len(samples),
        "blocks": len(np.unique(blocks)),
        "pooled": _drop_undefined(pooled),
        "series": {},
    }
    tags = samples.tags(data)
    for tag in sorted(set(tags)):
        mask = tags == tag
        boot = BlockBootstrap(blocks[mask], bootstrap_samples, seed)
        scored = score(metrics, y[mask], {k: v[mask] for k, v in preds.items()}, boot)
        out["series"][str(tag)] = {"samples": int(mask.sum()), **_drop_undefined(scored)}
    return out


def report_of_classes(samples: Samples, p: np.ndarray) -> dict[str, Any]:
    """scikit-learn's classification report at threshold 0.5 (down = 0, up = 1)."""
    report: dict[str, Any] = classification_report(
        samples.y_up.astype(int),
        (p > 0.5).astype(int),
        labels=[0, 1],
        target_names=["down", "up"],
        output_dict=True,
        zero_division=0,
    )
    return report


def train_test_gap(
    target: str, train: Samples, p_train: np.ndarray, test: Samples, p_test: np.ndarray
) -> dict[str, Any]:
    """Point metrics on the training split and the test split, and test minus train."""
    metrics = metrics_for(target)
    y_train, y_test = truth(target, train), truth(target, test)
    out = {}
    for name, fn in metrics.items():
        a, b = fn(y_train, p_train), fn(y_test, p_test)
        out[name] = {"train": a, "test": b, "gap": b - a}
    return out
