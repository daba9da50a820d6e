"""Baselines for the multi-horizon targets, each with the same quantile treatment.

Volume over the next ``h`` bars (predictions in log1p units, like the target):

- ``persistence``: ``h`` times this bar's volume;
- ``seasonal_profile``: per series, the mean log1p volume of each hour of the week over
  the training rows, its bars ``t+1..t+h`` summed in volume units;
- ``ridge``: one Ridge per horizon on the next-bar ridge's design (24 lags of log volume,
  6 lags of |return|, the target bar's calendar).

Each rule's quantile ``q`` is its point plus the empirical ``q`` quantile of its residuals
(truth minus point, log space) on the training samples, so the median is the rule's
point shifted by its median residual and the p90 its point shifted by the 90th
percentile of its misses. Direction at ``h`` bars: ``logistic``, one LogisticRegression
per horizon on the next-bar logistic's design, and ``majority``, the training up-rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from training.baselines import logistic_design, ridge_design
from training.dataset import Samples, SeriesData, lagged

WEEK_HOURS = 168
HOUR_MS = 3_600_000
#: the hour of the week of 1970-01-01 00:00 UTC, a Thursday, counted from Monday 00:00
EPOCH_HOUR_OF_WEEK = 3 * 24

#: name -> (n, len(quantiles)) predictions, one entry per horizon
Quantiles = dict[str, np.ndarray]


def hour_of_week(ms: np.ndarray) -> np.ndarray:
    return np.asarray((ms // HOUR_MS + EPOCH_HOUR_OF_WEEK) % WEEK_HOURS)


def seasonal_profile(train: Samples, n_series: int) -> np.ndarray:
    """``(n_series, 168)``: mean next-bar log1p volume per hour of the week, training rows
    only (an hour with no training row gets the series' overall mean)."""
    profile = np.zeros((n_series, WEEK_HOURS))
    how = hour_of_week(train.target_ms)
    for i in range(n_series):
        mine = train.series == i
        if not mine.any():
            continue
        sums = np.bincount(how[mine], train.y_log_volume[mine], WEEK_HOURS)
        counts = np.bincount(how[mine], minlength=WEEK_HOURS)
        overall = float(train.y_log_volume[mine].mean())
        profile[i] = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
    return profile


def profile_sum(profile: np.ndarray, samples: Samples, horizon: int, bar_ms: int) -> np.ndarray:
    """log1p of the profile's volume summed over the sample's next ``horizon`` bars."""
    total = np.zeros(len(samples))
    for k in range(horizon):
        how = hour_of_week(samples.target_ms + k * bar_ms)
        total += np.expm1(profile[samples.series, how])
    return np.log1p(total)


def with_quantiles(
    point: np.ndarray, train_point: np.ndarray, train_y: np.ndarray, quantiles: Sequence[float]
) -> np.ndarray:
    """``(n, len(quantiles))``: the point plus each empirical quantile of training residuals."""
    shifts = np.quantile(train_y - train_point, list(quantiles))
    return np.asarray(point[:, None] + shifts[None, :])


def volume_horizon_baselines(
    data: Sequence[SeriesData],
    train: Samples,
    test: Samples,
    horizons: Sequence[int],
    quantiles: Sequence[float],
    *,
    seed: int,
) -> dict[int, Quantiles]:
    """``out[h][name]``: each baseline's quantiles of the ``h``-bar volume on ``test``."""
    bar_ms = data[0].series.bar_ms
    profile = seasonal_profile(train, len(data))
    design_train, design_test = ridge_design(data, train), ridge_design(data, test)
    now_train = lagged(data, train, "log_volume", [0])[:, 0]
    now_test = lagged(data, test, "log_volume", [0])[:, 0]
    out: dict[int, Quantiles] = {}
    for j, h in enumerate(horizons):
        y_train = train.y_volume_sum[:, j]
        ridge = make_pipeline(StandardScaler(), Ridge(alpha=1.0, random_state=seed))
        ridge.fit(design_train, y_train)
        points = {
            # log1p(h * v) from log1p(v): the volume of this bar, h times
            "persistence": (np.log1p(h * np.expm1(now_train)), np.log1p(h * np.expm1(now_test))),
            "seasonal_profile": (
                profile_sum(profile, train, h, bar_ms),
                profile_sum(profile, test, h, bar_ms),
            ),
            "ridge": (ridge.predict(design_train), ridge.predict(design_test)),
        }
        out[h] = {
            name: with_quantiles(on_test, on_train, y_train, quantiles)
            for name, (on_train, on_test) in points.items()
        }
    return out


def direction_horizon_baselines(
    data: Sequence[SeriesData],
    train: Samples,
    test: Samples,
    horizons: Sequence[int],
    seed: int,
) -> dict[int, dict[str, np.ndarray]]:
    """``out[h][name]``: each baseline's P(close in ``h`` bars above the close now)."""
    design_train, design_test = logistic_design(data, train), logistic_design(data, test)
    out: dict[int, dict[str, np.ndarray]] = {}
    for j, h in enumerate(horizons):
        y_train = train.y_up_at[:, j].astype(int)
        model = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)
        )
        model.fit(design_train, y_train)
        out[h] = {
            "majority": np.full(len(test), float(y_train.mean())),
            "logistic": model.predict_proba(design_test)[:, 1],
        }
    return out
