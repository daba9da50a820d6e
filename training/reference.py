"""The strong direction baseline itself, as a servable version.

When no network beats the trainer's logistic regression (:func:`training.baselines.
fit_logistic`: six one-bar returns, 3/6/24-bar returns, volatility, volume z-score, RSI,
calendar), the best model that exists *is* that logistic. Every one of its inputs is a
cell of the model's feature window (a feature of the window's last row, or ``ret_1`` of
one of its last six rows), and the pipeline is affine up to the sigmoid, so it maps
exactly onto ``Flatten -> Dense(1, sigmoid)`` over the window the daemon already hands
every model: the weight of each cell it reads is the logistic's coefficient over its
standard deviation, times the window scaler's scale; every other cell weighs 0; the
intercept absorbs both scalers' means. Served, it predicts what the baseline predicted
(to float32), so the version is scored equal to the baseline and is promoted against
the version in service only (it cannot beat itself).

Volume has no such version: the ridge reads the target bar's hour one-hot, which is not
an affine function of the window, so its fallback stays the ridge fitted over the window
(:mod:`training.linear`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamer.features import FEATURE_NAMES
from training.baselines import LAGS_6, LOGISTIC_COLUMNS, fit_logistic
from training.dataset import Samples, SeriesData
from training.linear import LinearFit
from whalecast.artifact import Scaler

OVER = "the strong baseline's own inputs (the logistic regression it is compared with)"

#: The logistic's design, column by column: (feature, rows before the window's last).
DESIGN: tuple[tuple[str, int], ...] = tuple(("ret_1", lag) for lag in LAGS_6) + tuple(
    (name, 0) for name in LOGISTIC_COLUMNS
)


def embeddable(columns: Sequence[int], window: int) -> bool:
    """Whether every input of the logistic is a cell of this window."""
    return window > max(lag for _, lag in DESIGN) and all(
        FEATURE_NAMES.index(name) in columns for name, _ in DESIGN
    )


def reference_fit(
    data: Sequence[SeriesData],
    train: Samples,
    columns: Sequence[int],
    scaler: Scaler,
    *,
    window: int,
    seed: int,
) -> LinearFit:
    """The baseline's logistic, fitted as the evaluation fits it, over the scaled window."""
    if not embeddable(columns, window):
        raise ValueError("the window lacks some of the logistic's inputs")
    pipeline = fit_logistic(data, train, seed)
    standard, logistic = pipeline[0], pipeline[-1]
    width = len(columns)
    coef = np.zeros(window * width)
    intercept = float(logistic.intercept_[0])
    for j, (name, lag) in enumerate(DESIGN):
        c = list(columns).index(FEATURE_NAMES.index(name))
        w = float(logistic.coef_[0][j]) / float(standard.scale_[j])
        # design value = scaled cell * scaler.scale + scaler.mean
        coef[(window - 1 - lag) * width + c] += w * float(scaler.scale[c])
        intercept += w * (float(scaler.mean[c]) - float(standard.mean_[j]))
    return LinearFit("logistic", coef, intercept, float(logistic.C), OVER, len(DESIGN))
