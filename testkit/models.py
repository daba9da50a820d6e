"""Tiny Keras models with the seeds' architectures, written as real registry artifacts."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.benchmodels import (
    WINDOW,
    build_seed004_model,
    build_volume_model,
    preprocess_for,
    write_model_artifact,
)
from streamer.features import FEATURE_NAMES

__all__ = [
    "DIRECTION_HORIZONS", "VOLUME_HORIZONS", "WINDOW", "deep_model", "horizon_model",
    "horizon_preprocess", "horizon_values", "preprocess_for", "random_windows", "small_model", "volume_model",
    "write_horizon_model", "write_model",
]  # fmt: skip

#: The outputs of the served horizon presets: volume over 1, 6 and 24 bars at the median
#: and the 90th percentile; direction 1 and 6 bars ahead.
VOLUME_HORIZONS: list[dict[str, Any]] = [
    {"target": "volume_next_bars", "horizon_bars": h, "quantile": q}
    for h in (1, 6, 24)
    for q in (0.5, 0.9)
]
DIRECTION_HORIZONS: list[dict[str, Any]] = [
    {"target": "p_up_in_bars", "horizon_bars": h} for h in (1, 6)
]


def volume_model(window: int = WINDOW, seed: int = 0) -> Any:
    """Seed 000: LSTM(50, relu) -> Dense(1) on one feature."""
    return build_volume_model(window, 1, seed=seed)


def deep_model(window: int = WINDOW, n_features: int = len(FEATURE_NAMES), seed: int = 0) -> Any:
    return build_seed004_model(window, n_features, seed=seed)


def small_model(window: int, n_features: int, seed: int = 0) -> Any:
    """A cheap LSTM for tests that only need some valid model."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((window, n_features)),
            keras.layers.LSTM(4),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def horizon_model(window: int, n_features: int, outputs: int, sigmoid: bool, seed: int = 0) -> Any:
    """A cheap LSTM whose last layer has one unit per output (sigmoid for probabilities)."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((window, n_features)),
            keras.layers.LSTM(6),
            keras.layers.Dense(outputs, activation="sigmoid" if sigmoid else None),
        ]
    )


def horizon_preprocess(kind: str, window: int = WINDOW) -> dict[str, Any]:
    """``preprocess.json`` of a horizon model: ``volume`` (6 outputs, log1p, one target
    scaler column each) or ``direction`` (2 outputs)."""
    if kind == "volume":
        n = len(VOLUME_HORIZONS)
        return preprocess_for(
            ["log_volume", "ret_1"], window=window, target="volume_next_bars",
            mean=[5.0, 0.0], outputs=VOLUME_HORIZONS, target_transform="log1p",
            target_scaler={"mean": [4.0 + 0.3 * i for i in range(n)], "scale": [0.5] * n},
        )  # fmt: skip
    if kind == "direction":
        features = ["ret_1", "rsi_14", "hour_cos"]
        return preprocess_for(
            features, window=window, target="p_up_in_bars", mean=[0.0, 50.0, 0.0],
            scale=[0.01, 10.0, 1.0], outputs=DIRECTION_HORIZONS,
        )  # fmt: skip
    raise ValueError(f"no horizon model {kind!r}")


def write_horizon_model(
    registry: Any,
    name: str,
    kind: str,
    *,
    window: int = WINDOW,
    seed: int = 0,
    graphs: bool = False,
) -> tuple[str, Any]:
    """Write a horizon model artifact (:func:`horizon_preprocess`); its version and model."""
    preprocess = horizon_preprocess(kind, window)
    model = horizon_model(
        window, len(preprocess["features"]), len(preprocess["outputs"]), kind == "direction", seed
    )
    return write_model_artifact(registry, name, model, preprocess, graphs=graphs), model


def horizon_values(kind: str, model: Any, windows: np.ndarray) -> np.ndarray:
    """Each output's value ``(n, outputs)`` for the daemon's full windows, from a direct
    Keras forward pass of ``model`` (what the runtime must serve, computed apart from it)."""
    pre = horizon_preprocess(kind, window=int(model.inputs[0].shape[1]))
    columns = [FEATURE_NAMES.index(name) for name in pre["features"]]
    x = windows[:, -pre["window"] :, columns] - np.float32(pre["scaler"]["mean"])
    x /= np.float32(pre["scaler"]["scale"])
    raw = np.asarray(model.predict_on_batch(x), dtype=np.float64)
    if kind == "direction":
        return raw
    scaler = pre["target_scaler"]
    values: np.ndarray = np.expm1(raw * np.asarray(scaler["scale"]) + np.asarray(scaler["mean"]))
    clipped: np.ndarray = np.maximum(values, 0.0)
    return clipped


write_model = write_model_artifact


def random_windows(n: int, rows: int = WINDOW, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, rows, len(FEATURE_NAMES))).astype(np.float32)
