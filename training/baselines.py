"""Baselines every model is shown beside: naive rules and strong simple models.

Volume (predictions in log1p units, like the target):

- ``persistence``: next bar's volume = this bar's;
- ``seasonal_naive``: next bar's volume = the same hour yesterday (bar ``t - 23``);
- ``ridge``: scikit-learn Ridge on lagged log volume (24 bars), recent absolute returns
  (6 bars) and calendar features of the target bar (hour one-hot, weekday sin/cos).

Direction (predictions are P(up)):

- ``majority``: the training split's up-rate as a constant probability;
- ``previous_bar``: next bar moves like this bar (hard 0/1);
- ``reversal``: next bar moves against this bar (hard 0/1);
- ``logistic``: LogisticRegression on recent returns (6 one-bar lags, 3/6/24-bar
  returns), volatility (6, 24), volume z-score, RSI and calendar features.

The fitted ones use the same training samples as the network and standardise with
training statistics only. They are saved only as a fallback: when no network beats the
logistic, it is written as a version of its own (:mod:`training.reference`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from training.dataset import DAY_MS, Samples, SeriesData, lagged
from whalecast.targets import DIRECTION, VOLUME

STRONG = {VOLUME: "ridge", DIRECTION: "logistic"}
HARD_LABELS = frozenset({"previous_bar", "reversal"})  # 0/1 predictions: no log loss
LAGS_24 = range(24)
LAGS_6 = range(6)
HOUR_MS = 3_600_000


def calendar_of_target(samples: Samples) -> np.ndarray:
    """Hour-of-day one-hot and weekday sin/cos of each target bar (known in advance)."""
    hour = (samples.target_ms % DAY_MS) // HOUR_MS
    onehot = np.eye(24)[hour]
    weekday = (samples.target_ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday
    angle = 2 * np.pi * weekday / 7
    return np.column_stack([onehot, np.sin(angle), np.cos(angle)])


def ridge_design(data: Sequence[SeriesData], samples: Samples) -> np.ndarray:
    return np.column_stack(
        [
            lagged(data, samples, "log_volume", LAGS_24),
            np.abs(lagged(data, samples, "ret_1", LAGS_6)),
            calendar_of_target(samples),
        ]
    )


LOGISTIC_COLUMNS = ("ret_3", "ret_6", "ret_24", "vol_6", "vol_24", "volume_z_24", "rsi_14",
                    "hour_sin", "hour_cos", "dow_sin", "dow_cos")  # fmt: skip


def logistic_design(data: Sequence[SeriesData], samples: Samples) -> np.ndarray:
    return np.column_stack(
        [lagged(data, samples, "ret_1", LAGS_6)]
        + [lagged(data, samples, name, [0]) for name in LOGISTIC_COLUMNS]
    )


def volume_baselines(
    data: Sequence[SeriesData], train: Samples, test: Samples, seed: int
) -> dict[str, np.ndarray]:
    model = make_pipeline(StandardScaler(), Ridge(alpha=1.0, random_state=seed))
    model.fit(ridge_design(data, train), train.y_log_volume)
    return {
        "persistence": lagged(data, test, "log_volume", [0])[:, 0],
        "seasonal_naive": lagged(data, test, "log_volume", [23])[:, 0],
        "ridge": model.predict(ridge_design(data, test)),
    }


def logistic_pipeline(seed: int) -> Pipeline:
    """The strong direction baseline's model, unfitted: standardise, then LogisticRegression."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))


def fit_logistic(data: Sequence[SeriesData], train: Samples, seed: int) -> Pipeline:
    """The strong direction baseline, fitted on the training rows' design."""
    return logistic_pipeline(seed).fit(logistic_design(data, train), train.y_up.astype(int))


def direction_baselines(
    data: Sequence[SeriesData], train: Samples, test: Samples, seed: int
) -> dict[str, np.ndarray]:
    model = fit_logistic(data, train, seed)
    up_now = (lagged(data, test, "ret_1", [0])[:, 0] > 0).astype(float)
    return {
        "majority": np.full(len(test), float(train.y_up.mean())),
        "previous_bar": up_now,
        "reversal": 1.0 - up_now,
        "logistic": model.predict_proba(logistic_design(data, test))[:, 1],
    }


def baselines(
    target: str, data: Sequence[SeriesData], train: Samples, test: Samples, seed: int
) -> dict[str, np.ndarray]:
    if target == VOLUME:
        return volume_baselines(data, train, test, seed)
    return direction_baselines(data, train, test, seed)
