"""Tiny Keras models with the seeds' architectures, written as real registry artifacts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streamer.features import FEATURE_NAMES, FEATURE_VERSION
from whalecast.artifact import MODEL_FILE, PREPROCESS_FILE, write_artifact, write_json

WINDOW = 24


def volume_model(window: int = WINDOW, seed: int = 0) -> Any:
    """Seed 000: LSTM(50, relu) -> Dense(1) on one feature."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((window, 1)), keras.layers.LSTM(50, activation="relu"), keras.layers.Dense(1)]
    )


def deep_model(window: int = WINDOW, n_features: int = len(FEATURE_NAMES), seed: int = 0) -> Any:
    from inference.bench import build_seed004_model

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


def preprocess_for(
    features: Sequence[str],
    *,
    window: int = WINDOW,
    target: str = "p_up_next_bar",
    mean: Sequence[float] | None = None,
    scale: Sequence[float] | None = None,
    feature_version: int = FEATURE_VERSION,
    **extra: Any,
) -> dict[str, Any]:
    n = len(features)
    return {
        "feature_version": feature_version,
        "features": list(features),
        "window": window,
        "scaler": {
            "mean": list(mean) if mean is not None else [0.0] * n,
            "scale": list(scale) if scale is not None else [1.0] * n,
        },
        "target": target,
        **extra,
    }


def write_model(
    registry: Path,
    name: str,
    model: Any,
    preprocess: dict[str, Any],
    *,
    trained_at: datetime | None = None,
    version: str | None = None,
    current: bool = True,
    extra: Callable[[Path], None] | None = None,
) -> str:
    """Write a complete artifact version (and point CURRENT at it); returns the version."""
    from whalecast.artifact import set_current

    moment = trained_at or datetime.now(UTC)

    def fill(directory: Path) -> None:
        if model is not None:
            model.save(directory / MODEL_FILE)
        write_json(directory / PREPROCESS_FILE, preprocess)
        write_json(directory / "metadata.json", {"trained_at": moment.isoformat()})
        if extra is not None:
            extra(directory)

    written, _ = write_artifact(registry, name, fill, version=version)
    if current:
        set_current(registry, name, written)
    return written


def random_windows(n: int, rows: int = WINDOW, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, rows, len(FEATURE_NAMES))).astype(np.float32)
