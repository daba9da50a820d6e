"""The strong simple model as a servable artifact: a linear model over the model's window.

When no network beats the strong baseline, the trainer can still put the best simple model
in service. It fits the baseline's kind of model (ridge for volume, logistic regression for
direction) on exactly what a network of the same preset sees: the scaled feature window,
flattened (``window x features`` inputs, oldest row first), with the same targets; the penalty is the one of a short list that scores best on the
validation split (the split the networks stop early on). The fitted coefficients become a two-layer Keras graph, ``Flatten`` then ``Dense(1)`` (with a
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
from sklearn.linear_model import LogisticRegression

from whalecast.targets import VOLUME, Target

#: Penalties tried, the one with the best validation score kept (MAE of the scaled log
#: volume; log loss of P(up)). Ridge's alpha multiplies the squared weights; logistic's C is
#: the inverse strength.
RIDGE_ALPHAS = (1.0, 10.0, 100.0, 1_000.0, 10_000.0)
LOGISTIC_CS = (1.0, 0.1, 0.01)
OVER = "the model's scaled feature window, flattened"


@dataclass(frozen=True)
class LinearFit:
    """Coefficients over the flattened window and the intercept (in the model's output space:
    the scaled log volume, or the logit of P(up)), and the penalty validation chose."""

    kind: str
    coef: np.ndarray  # (window * features,)
    intercept: float
    penalty: float = 0.0
    over: str = OVER  # what its inputs are
    inputs: int = 0  # how many of the window's cells it reads (0: all)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The fitted model's output for windows ``x`` ``(n, window, features)``, float64."""
        z = x.reshape(len(x), -1).astype(np.float64) @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)) if self.kind == "logistic" else z)

    def describe(self) -> dict[str, Any]:
        name = "alpha" if self.kind == "ridge" else "C"
        inputs = self.inputs or len(self.coef)
        return {"kind": self.kind, "over": self.over, "inputs": inputs, name: self.penalty}


Split = tuple[np.ndarray, np.ndarray]


def fit_linear(target: Target, train: Split, validation: Split, seed: int) -> LinearFit:
    """Ridge (volume, on the scaled target) or logistic regression (direction) on the
    flattened windows of ``train``, the penalty chosen on ``validation``."""
    fits = _ridges(*train) if target == VOLUME else _logistics(*train, seed)
    x_val, y_val = validation
    return min(fits, key=lambda f: _loss(f, x_val, y_val))


def _loss(fit: LinearFit, x: np.ndarray, y: np.ndarray) -> float:
    p = fit.raw(x)
    if fit.kind == "ridge":
        return float(np.mean(np.abs(p - y)))
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _ridges(x: np.ndarray, y: np.ndarray) -> list[LinearFit]:
    return ridges_per_column(x, np.asarray(y).reshape(-1, 1))[0]


def ridges_per_column(x: np.ndarray, y: np.ndarray) -> list[list[LinearFit]]:
    """Ridge for every alpha and every column of ``y`` ``(n, k)`` from one Gram matrix (the
    intercept is not penalised): ``out[column][alpha]``."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean_x = flat.mean(axis=0)
    ys = np.asarray(y, np.float64)
    mean_y = ys.mean(axis=0)
    centred = flat - mean_x
    gram = centred.T @ centred
    rhs = centred.T @ (ys - mean_y)
    eye = np.eye(len(gram))
    out: list[list[LinearFit]] = [[] for _ in range(ys.shape[1])]
    for alpha in RIDGE_ALPHAS:
        coefs = np.linalg.solve(gram + alpha * eye, rhs)
        for j, fits in enumerate(out):
            coef = coefs[:, j]
            fits.append(LinearFit("ridge", coef, float(mean_y[j] - mean_x @ coef), alpha))
    return out


def _logistics(x: np.ndarray, y: np.ndarray, seed: int) -> list[LinearFit]:
    flat = x.reshape(len(x), -1)
    out = []
    for c in LOGISTIC_CS:
        model = LogisticRegression(C=c, max_iter=1000, random_state=seed)
        model.fit(flat, y.astype(int))
        out.append(LinearFit("logistic", np.asarray(model.coef_[0], np.float64),
                             float(model.intercept_[0]), c))  # fmt: skip
    return out


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
