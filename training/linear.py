"""The strong simple model as a servable artifact: a linear model over the model's window.

When no network beats the strong baseline, the trainer can still put the best simple model
in service. It fits the baseline's kind of model (ridge for volume, logistic regression for
direction) on exactly what a network of the same preset sees: the scaled feature window,
flattened (``window x features`` inputs, oldest row first), with the same targets. The
fitted coefficients become a two-layer Keras graph, ``Flatten`` then ``Dense(1)`` (with a
sigmoid for direction), written as a normal ``model.keras``: no pickle, built-in layers
only, loaded in safe mode and served like any network. It has no recurrent layer, so the
daemon serves it with full-window passes (the incremental path does not apply).

The artifact's metadata carries ``baseline: {"kind", "over"}``; it is scored and promoted
under the same rules as a network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers
from sklearn.linear_model import LogisticRegression, Ridge

from whalecast.targets import VOLUME, Target

RIDGE_ALPHA = 1.0
OVER = "the model's scaled feature window, flattened"


@dataclass(frozen=True)
class LinearFit:
    """Coefficients over the flattened window and the intercept (in the model's output space:
    the scaled log volume, or the logit of P(up))."""

    kind: str
    coef: np.ndarray  # (window * features,)
    intercept: float

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The fitted model's output for windows ``x`` ``(n, window, features)``, float64."""
        z = x.reshape(len(x), -1).astype(np.float64) @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)) if self.kind == "logistic" else z)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "over": OVER, "inputs": len(self.coef)}


def fit_linear(target: Target, x: np.ndarray, y: np.ndarray, seed: int) -> LinearFit:
    """Ridge (volume, on the scaled target) or logistic regression (direction) on ``x``."""
    flat = x.reshape(len(x), -1)
    if target == VOLUME:
        ridge = Ridge(alpha=RIDGE_ALPHA, random_state=seed).fit(flat, y)
        return LinearFit("ridge", np.asarray(ridge.coef_, np.float64), float(ridge.intercept_))
    logistic = LogisticRegression(max_iter=1000, random_state=seed).fit(flat, y.astype(int))
    return LinearFit(
        "logistic", np.asarray(logistic.coef_[0], np.float64), float(logistic.intercept_[0])
    )


def linear_model(fit: LinearFit, window: int, n_features: int) -> keras.Model:
    """``Flatten -> Dense(1)`` on ``Input(window, n_features)`` with the fitted weights."""
    if len(fit.coef) != window * n_features:
        raise ValueError(f"{len(fit.coef)} coefficients for a {window} x {n_features} window")
    inputs = keras.Input((window, n_features), name="window")
    flat = layers.Flatten(name="flat_window")(inputs)
    activation = "sigmoid" if fit.kind == "logistic" else None
    name = "p_up" if fit.kind == "logistic" else "log_volume_next"
    dense = layers.Dense(1, activation=activation, name=name)
    outputs = dense(flat)
    dense.set_weights(
        [fit.coef.reshape(-1, 1).astype(np.float32), np.array([fit.intercept], np.float32)]
    )
    return keras.Model(inputs, outputs, name=f"{fit.kind}_window")
