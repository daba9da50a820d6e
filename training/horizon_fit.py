"""What a multi-horizon preset fits: its output columns, their targets and their start.

A preset with ``horizons`` (and, for volume, ``quantiles``) has one output per horizon
and quantile, horizon-major: ``volume-horizons`` outputs p50 and p90 of the 1-, 6- and
24-bar volume in that order, ``direction-horizons`` P(up) at 1 and 6 bars. Volume outputs
are trained on the standardised log1p of the summed volume, one mean and scale per
output (the two quantiles of a horizon share their horizon's), with the pinball loss of
each output's quantile (:class:`training.presets.Pinball`).
"""

from __future__ import annotations

import keras
import numpy as np

from training.dataset import Samples
from training.linear import LinearFit, ridges_per_column
from training.params import HyperParams
from whalecast.artifact import Scaler

Output = tuple[int, float | None]  # (horizon in bars, quantile or None)


def outputs_of(params: HyperParams) -> list[Output]:
    """The model's output columns in order: horizon-major, then quantile."""
    quantiles: list[float | None] = list(params.get("quantiles") or []) or [None]
    return [(int(h), q) for h in params["horizons"] for q in quantiles]


def is_horizons(params: HyperParams) -> bool:
    return bool(params.get("horizons"))


def horizon_column(params: HyperParams) -> list[int]:
    """For each output, the column of its horizon in ``Samples.y_volume_sum`` / ``y_up_at``."""
    horizons = [int(h) for h in params["horizons"]]
    return [horizons.index(h) for h, _ in outputs_of(params)]


def volume_scaler(train: Samples, params: HyperParams) -> Scaler:
    """Mean and scale of each output's log1p summed volume over the training samples."""
    y = train.y_volume_sum[:, horizon_column(params)]
    return Scaler(
        mean=[float(m) for m in y.mean(axis=0)],
        scale=[float(max(s, 1e-12)) for s in y.std(axis=0)],
    )


def targets(samples: Samples, params: HyperParams, scaler: Scaler | None) -> np.ndarray:
    """``(n, outputs)`` float32: standardised log1p volume sums, or 0/1 ups at each horizon."""
    columns = horizon_column(params)
    if scaler is None:
        return np.asarray(samples.y_up_at[:, columns], np.float32)
    y = (samples.y_volume_sum[:, columns] - np.asarray(scaler.mean)) / np.asarray(scaler.scale)
    return np.asarray(y, np.float32)


def start_at_quantile_ridges(
    model: keras.Model,
    params: HyperParams,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
) -> list[LinearFit]:
    """Set the model's ``linear`` layer to one ridge per horizon over the flattened window,
    its penalty chosen on validation MAE, each quantile output shifted by that quantile of
    the ridge's training residuals: fitting starts from the ridge baseline with quantiles."""
    (x, y), (x_val, y_val) = train, val
    outputs = outputs_of(params)
    per_output = ridges_per_column(x, y)
    flat_val = x_val.reshape(len(x_val), -1).astype(np.float64)
    chosen: list[LinearFit] = []
    for j, fits in enumerate(per_output):
        best = min(fits, key=lambda f: float(np.mean(np.abs(flat_val @ f.coef + f.intercept
                                                           - y_val[:, j]))))  # fmt: skip
        shift = 0.0
        level = outputs[j][1]
        if level is not None:
            shift = float(np.quantile(y[:, j] - best.raw(x), level))
        chosen.append(LinearFit("ridge", best.coef, best.intercept + shift, best.penalty))
    kernel = np.stack([f.coef for f in chosen], axis=1).astype(np.float32)
    bias = np.array([f.intercept for f in chosen], np.float32)
    model.get_layer("linear").set_weights([kernel, bias])
    return chosen
