"""One served model version: loaded safely, checked, and ready for batched prediction.

:meth:`ModelRuntime.load` reads ``<registry>/<model>/<version>/`` and refuses
(:class:`ModelRefused`, with the reason) a model that

- holds anything unsafe (see :mod:`inference.safety`) or fails to load in Keras
  safe mode (``compile=False``, no custom objects) (TensorFlow backends);
- under ``onnx``, has no ONNX graphs or graphs that do not match their manifest
  (:mod:`inference.onnx_serving`: served without importing TensorFlow);
- declares a feature version other than the daemon's, or a feature the daemon
  does not compute, or a window longer than the daemon keeps;
- has an input shape other than ``(window, len(features))`` or an output other
  than one value per sample for each of its outputs (``preprocess.json``'s
  ``outputs``, one unless it says otherwise);
- returns a non-finite value on a warm-up batch;
- runs under a backend whose output differs from the Keras model's by more
  than 1e-5 (absolute or relative) on warm-up batches, including sizes that are
  not a bucket and sizes past the largest bucket (under ``onnx``: the Keras output
  stored with the artifact's check batches).

:meth:`ModelRuntime.predict` takes the daemon's full windows ``(n, W, F)`` (all
v1 features, oldest row first), keeps the model's newest ``window`` rows and its
own columns in its own order, applies the stored scaler, runs the backend, and
maps the output ``(n, outputs)`` to each output's value: a probability as is, a
volume through the inverse target scaler (its column) and ``expm1`` (never below zero).

Incremental passes (:mod:`inference.incremental`, on unless ``incremental=False``):
a recurrent model that can be split, and whose split matches the Keras model (under
``onnx``: the full-window graph) to 1e-5 on the warm-up batches, is also served by :meth:`ModelRuntime.prime` (between bars:
the state after each series' older rows) and :meth:`ModelRuntime.predict_bar` (at the
bar: one step from that state where the older rows are exactly the primed ones, the
full window elsewhere). A model that cannot be split is served by full passes only;
``incremental_off`` says why. It is never a reason to refuse a model.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from inference.backends import TF_BACKENDS, Backend, BackendError
from inference.checks import RefusalReason, parse_trained_at
from inference.incremental import StateCache, Stepper
from inference.publisher import Published
from inference.safety import UnsafeArtifact, check_directory
from streamer.features import FEATURE_NAMES, FEATURE_VERSION
from whalecast.artifact import (
    METADATA_FILE,
    ArtifactError,
    OutputSpec,
    Preprocess,
    load_preprocess,
    read_json,
    version_dir,
)
from whalecast.targets import VOLUME_TARGETS

DEFAULT_BUCKETS = (1, 8, 32, 128, 512, 1024, 4096)


class ModelRefused(Exception):
    """A model version that must not be served; ``reason`` says why, for logs and operators."""

    def __init__(self, model: str, version: str, reason: str) -> None:
        super().__init__(f"model {model} version {version} refused: {reason}")
        self.model = model
        self.version = version
        self.reason = reason


@dataclass
class ModelRuntime:
    model: str
    version: str
    backend_name: str
    preprocess: Preprocess
    trained_at: datetime
    metadata: dict[str, Any]
    columns: np.ndarray
    backend: Backend
    n_features: int
    incremental: Stepper | None = None
    incremental_off: str = ""  # why incremental passes are off for this model, if they are
    states: StateCache = field(default_factory=StateCache)
    loaded_at: float = field(default_factory=time.time)

    @property
    def target(self) -> str:
        return self.preprocess.target

    @property
    def outputs(self) -> list[OutputSpec]:
        """What each column of :meth:`predict` is, in order."""
        return self.preprocess.output_specs()

    @functools.cached_property
    def published(self) -> list[Published]:
        """How each column is published: its target, and its ``horizon_bars`` and
        ``quantile`` (``None`` for a v1 model, whose messages do not carry them)."""
        if self.preprocess.outputs is None:
            return [Published(self.target, None, None)]
        return [Published(o.target, o.horizon_bars, o.quantile) for o in self.outputs]

    @property
    def window(self) -> int:
        return self.preprocess.window

    @classmethod
    def load(
        cls,
        registry: Path,
        model: str,
        version: str,
        backend: str = "keras",
        *,
        feature_names: Sequence[str] = FEATURE_NAMES,
        feature_version: int = FEATURE_VERSION,
        full_window: int | None = None,
        batch_buckets: Sequence[int] = DEFAULT_BUCKETS,
        incremental: bool = True,
    ) -> ModelRuntime:
        """Load, check and warm up one version; raise :class:`ModelRefused` on any problem."""
        try:
            directory = version_dir(Path(registry), model, version)
            if not directory.is_dir():
                raise RefusalReason(f"no version directory {directory}")
            check_directory(directory)
            preprocess = load_preprocess(directory)
            columns = feature_columns(preprocess, feature_names, feature_version, full_window)
            metadata = read_json(directory / METADATA_FILE)
            trained_at = parse_trained_at(metadata)
            chosen, split, off = load_backend(
                directory, preprocess, backend, batch_buckets, incremental
            )
        except ModelRefused:
            raise
        except (ArtifactError, UnsafeArtifact, BackendError, RefusalReason) as e:
            raise ModelRefused(model, version, str(e)) from e
        return cls(
            model=model,
            version=version,
            backend_name=chosen.name,
            preprocess=preprocess,
            trained_at=trained_at,
            metadata=metadata,
            columns=columns,
            backend=chosen,
            n_features=len(feature_names),
            incremental=split,
            incremental_off=off,
        )

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Target values ``(n, outputs)`` float64 for full feature windows ``(n, W, F)``."""
        self.check_windows(windows)
        if len(windows) == 0:
            return np.empty((0, len(self.outputs)), dtype=np.float64)
        x = self.prepare(windows)
        return self.to_target(self.backend(x))

    def predict_bar(self, windows: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, int]:
        """:meth:`predict` for one bar's series (``positions``: the caller's stable index of
        each series), stepping from primed states where they match; also returns how many
        series were stepped."""
        if self.incremental is None or len(windows) == 0:
            return self.predict(windows), 0
        self.check_windows(windows)
        x = self.prepare(windows)
        hit = self.states.match(positions, x[:, :-1])
        raw = np.empty((len(x), len(self.outputs)), dtype=np.float32)
        if hit.any():
            raw[hit] = self.incremental.step(x[hit, -1:], self.states.states(positions[hit]))
        if not hit.all():
            raw[~hit] = self.backend(np.ascontiguousarray(x[~hit]))
        return self.to_target(raw), int(hit.sum())

    def prime(self, windows: np.ndarray, positions: np.ndarray) -> None:
        """Between bars: the state after each series' newest ``window - 1`` rows, which
        :meth:`predict_bar` steps from at the next bar (complete windows only)."""
        if self.incremental is None or len(windows) == 0:
            return
        self.check_windows(windows)
        older = self.prepare(windows)[:, 1:]
        complete = np.isfinite(older).reshape(len(older), -1).all(axis=1)
        older = np.ascontiguousarray(older[complete])
        if len(older):
            self.states.put(positions[complete], older, self.incremental.prime(older))

    def check_windows(self, windows: np.ndarray) -> None:
        if (
            windows.ndim != 3
            or windows.shape[1] < self.window
            or windows.shape[2] != self.n_features
        ):
            raise ValueError(
                f"expected windows (n, >= {self.window}, {self.n_features}), got {windows.shape}"
            )

    def prepare(self, windows: np.ndarray) -> np.ndarray:
        """The model's scaled input: newest ``window`` rows, its columns, stored scaler."""
        x = windows[:, -self.window :, :][:, :, self.columns].astype(np.float32, copy=False)
        scaler = self.preprocess.scaler
        x -= np.asarray(scaler.mean, dtype=np.float32)
        x /= np.asarray(scaler.scale, dtype=np.float32)
        return x

    def to_target(self, raw: np.ndarray) -> np.ndarray:
        return output_to_target(raw, self.preprocess)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "backend": self.backend_name,
            "target": self.target,
            "outputs": len(self.outputs),
            "features": len(self.preprocess.features),
            "window": self.window,
            "trained_at": self.trained_at.isoformat(),
            "incremental": self.incremental is not None,
            **({"incremental_off": self.incremental_off} if self.incremental_off else {}),
        }


def feature_columns(
    preprocess: Preprocess,
    feature_names: Sequence[str],
    feature_version: int,
    full_window: int | None,
) -> np.ndarray:
    """Indices of the model's features in the daemon's feature list, in the model's order."""
    if preprocess.feature_version != feature_version:
        raise RefusalReason(
            f"feature version {preprocess.feature_version} does not match the daemon's "
            f"{feature_version}"
        )
    position = {name: i for i, name in enumerate(feature_names)}
    unknown = [name for name in preprocess.features if name not in position]
    if unknown:
        raise RefusalReason(f"features the daemon does not compute: {', '.join(unknown)}")
    if full_window is not None and preprocess.window > full_window:
        raise RefusalReason(
            f"window {preprocess.window} is longer than the {full_window} rows the daemon keeps"
        )
    return np.asarray([position[name] for name in preprocess.features], dtype=np.intp)


def load_backend(
    directory: Path, preprocess: Preprocess, name: str, buckets: Sequence[int], incremental: bool
) -> tuple[Backend, Stepper | None, str]:
    """The checked backend and split: ``onnx`` from the artifact's graphs (no TensorFlow
    imported), the others from the Keras model."""
    if name == "onnx":
        from inference import onnx_serving  # noqa: PLC0415 - onnxruntime, only when chosen

        return onnx_serving.load_verified(directory, preprocess, buckets, incremental)
    if name not in TF_BACKENDS:
        raise BackendError(f"unknown inference backend {name!r}")
    try:
        from inference import keras_serving  # noqa: PLC0415 - TensorFlow, only when chosen
    except ImportError as e:  # a serving-only install
        raise BackendError(
            f"the {name} backend needs TensorFlow ({e}): install whalecast[train], or set "
            "inference.backend: onnx"
        ) from e
    return keras_serving.load_verified(directory, preprocess, name, buckets, incremental)


def output_to_target(raw: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """Raw model output ``(n, outputs)`` to each output's value (inverse target scaler,
    per column, then the transform; volumes never below zero)."""
    value = raw.astype(np.float64).reshape(len(raw), -1)
    if preprocess.target_scaler is not None:
        value *= np.asarray(preprocess.target_scaler.scale)
        value += np.asarray(preprocess.target_scaler.mean)
    if preprocess.target_transform == "log1p":
        value = np.expm1(value)
    volume = [
        i for i, spec in enumerate(preprocess.output_specs()) if spec.target in VOLUME_TARGETS
    ]
    if len(volume) == value.shape[1]:
        value = np.maximum(value, 0.0)
    elif volume:
        value[:, volume] = np.maximum(value[:, volume], 0.0)
    return value
