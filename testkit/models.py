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
    "WINDOW", "deep_model", "preprocess_for", "random_windows", "small_model", "volume_model",
    "write_model",
]  # fmt: skip


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


write_model = write_model_artifact


def random_windows(n: int, rows: int = WINDOW, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, rows, len(FEATURE_NAMES))).astype(np.float32)
