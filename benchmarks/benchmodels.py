"""The seeds' model architectures with random weights, written as real registry artifacts.

``whalecast bench`` (and the benchmarks) serve these: the cost of a forward pass
depends on the architecture, not on trained weights.

- :func:`build_seed004_model`: seed 004's ``direction-deep`` network over every
  v1 feature (LSTM 128 and 64 with batch norm and dropout, Dense 32/16/1, sigmoid);
- :func:`build_volume_model`: seed 000's ``LSTM(50, relu) -> Dense(1)`` on one
  feature (``log_volume``), a ``next_bar_volume`` target through ``log1p``;
- :func:`build_volume_horizons_model`: the same network with a head of six outputs
  (``volume_next_bars`` over 1, 6 and 24 bars at p50 and p90), served beside the two
  with ``whalecast bench --e2e-horizons``.

Both come from the trainer's own preset builders with their default hyper-parameters,
so what is benchmarked is what is trained.

:func:`write_model_artifact` writes any Keras model as a complete version
(``model.keras``, ``preprocess.json``, ``metadata.json``, and with ``graphs`` the ONNX
graphs) and points ``CURRENT`` at it; :func:`write_bench_models` writes the graphs, so
every backend can serve the benchmark's models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras

from streamer.features import FEATURE_VERSION, SEED_FEATURES
from training.onnx_export import write_for
from training.params import DEFAULTS
from training.presets import BUILDERS
from whalecast import targets
from whalecast.artifact import (
    MODEL_FILE,
    PREPROCESS_FILE,
    Preprocess,
    set_current,
    write_artifact,
    write_json,
)

WINDOW = 24
DIRECTION_DEEP = "direction-deep"
VOLUME = "volume"
VOLUME_FEATURES = ("log_volume",)
VOLUME_HORIZONS = "volume-horizons"
#: What the ``volume-horizons`` benchmark model's outputs are.
VOLUME_HORIZON_OUTPUTS = [
    {"target": targets.VOLUME_SUM, "horizon_bars": h, "quantile": q}
    for h in (1, 6, 24)
    for q in (0.5, 0.9)
]


def build_seed004_model(window: int = WINDOW, n_features: int | None = None, seed: int = 0) -> Any:
    """Seed 004's network as the trainer's ``direction-deep`` preset builds it (its
    default hyper-parameters): LSTM(128)-BN-Dropout, LSTM(64)-BN-Dropout, Dense 32/16/1."""
    keras.utils.set_random_seed(seed)
    features = len(SEED_FEATURES) if n_features is None else n_features
    return BUILDERS[DIRECTION_DEEP](DEFAULTS[DIRECTION_DEEP], window, features)


def build_volume_model(window: int = WINDOW, n_features: int = 1, seed: int = 0) -> Any:
    """Seed 000 as the ``volume`` preset builds it: LSTM(50, relu) -> Dense(1)."""
    keras.utils.set_random_seed(seed)
    return BUILDERS[VOLUME](DEFAULTS[VOLUME], window, n_features)


def preprocess_for(
    features: Sequence[str],
    *,
    window: int = WINDOW,
    target: str = targets.DIRECTION,
    mean: Sequence[float] | None = None,
    scale: Sequence[float] | None = None,
    feature_version: int = FEATURE_VERSION,
    **extra: Any,
) -> dict[str, Any]:
    """A ``preprocess.json`` body (identity scaler unless given)."""
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


def volume_preprocess(window: int = WINDOW) -> dict[str, Any]:
    return preprocess_for(
        VOLUME_FEATURES, window=window, target=targets.VOLUME, target_transform="log1p",
        target_scaler={"mean": [5.0], "scale": [1.0]},
    )  # fmt: skip


def write_model_artifact(
    registry: Path,
    name: str,
    model: Any,
    preprocess: dict[str, Any],
    *,
    trained_at: datetime | None = None,
    version: str | None = None,
    current: bool = True,
    extra: Callable[[Path], None] | None = None,
    graphs: bool = False,
) -> str:
    """Write a complete artifact version (and point CURRENT at it); returns the version.
    With ``graphs``, also its ONNX graphs (what the ``onnx`` backend serves)."""
    moment = trained_at or datetime.now(UTC)

    def fill(directory: Path) -> None:
        if model is not None:
            model.save(directory / MODEL_FILE)
        write_json(directory / PREPROCESS_FILE, preprocess)
        write_json(directory / "metadata.json", {"trained_at": moment.isoformat()})
        if graphs:
            write_for(directory, model, Preprocess.model_validate(preprocess))
        if extra is not None:
            extra(directory)

    written, _ = write_artifact(Path(registry), name, fill, version=version)
    if current:
        set_current(Path(registry), name, written)
    return written


def build_volume_horizons_model(window: int = WINDOW, n_features: int = 1, seed: int = 0) -> Any:
    """The ``volume`` preset's network with one unit per output of
    :data:`VOLUME_HORIZON_OUTPUTS` (six: 1, 6 and 24 bars at the median and the 90th
    percentile): the cost of a horizon head over the same LSTM."""
    keras.utils.set_random_seed(seed)
    params = DEFAULTS[VOLUME]
    inputs = keras.Input((window, n_features), name="window")
    x = keras.layers.LSTM(params["units"], activation=params["activation"], name="lstm")(inputs)
    outputs = keras.layers.Dense(len(VOLUME_HORIZON_OUTPUTS), name="log_volume_sums")(x)
    return keras.Model(inputs, outputs, name="volume_horizons")


def volume_horizons_preprocess(window: int = WINDOW) -> dict[str, Any]:
    n = len(VOLUME_HORIZON_OUTPUTS)
    return preprocess_for(
        VOLUME_FEATURES, window=window, target=targets.VOLUME_SUM, target_transform="log1p",
        target_scaler={"mean": [5.0] * n, "scale": [1.0] * n}, outputs=VOLUME_HORIZON_OUTPUTS,
    )  # fmt: skip


def write_bench_models(
    registry: Path, window: int = WINDOW, seed: int = 0, horizons: bool = False
) -> dict[str, str]:
    """The served models of the end-to-end benchmark (with ``horizons``, also a volume model
    of six outputs); model name -> version."""
    deep = build_seed004_model(window, len(SEED_FEATURES), seed=seed)
    volume = build_volume_model(window, len(VOLUME_FEATURES), seed=seed + 1)
    written = {} if not horizons else {
        VOLUME_HORIZONS: write_model_artifact(
            registry, VOLUME_HORIZONS,
            build_volume_horizons_model(window, len(VOLUME_FEATURES), seed=seed + 2),
            volume_horizons_preprocess(window), graphs=True,
        )
    }  # fmt: skip
    return {
        DIRECTION_DEEP: write_model_artifact(
            registry,
            DIRECTION_DEEP,
            deep,
            preprocess_for(SEED_FEATURES, window=window),
            graphs=True,
        ),
        VOLUME: write_model_artifact(
            registry, VOLUME, volume, volume_preprocess(window), graphs=True
        ),
        **written,
    }
