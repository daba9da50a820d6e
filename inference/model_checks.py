"""The checks a model version passes before it is run: artifact, features, shapes,
and the Keras reference every faster path (a backend, incremental steps) must match.

Each failed check raises :class:`RefusalReason`; :meth:`inference.runtime.ModelRuntime.load`
turns it into a refusal of the version, with the reason.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from inference.safety import read_model_archive
from whalecast.artifact import MODEL_FILE, Preprocess

TOLERANCE = 1e-5
WARMUP_SIZES = (1, 7, 70)


class RefusalReason(Exception):
    """Internal: a check failed; :meth:`ModelRuntime.load` turns it into ModelRefused."""


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


def parse_trained_at(metadata: dict[str, Any]) -> datetime:
    raw = metadata.get("trained_at")
    try:
        moment = datetime.fromisoformat(str(raw))
    except ValueError as e:
        raise RefusalReason(f"metadata.json trained_at {raw!r} is not an ISO time") from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def load_keras_model(path: Path) -> Any:
    """Keras safe-mode load of the checked bytes (a private copy: the file may change meanwhile)."""
    data = read_model_archive(path)
    try:
        with tempfile.TemporaryDirectory(prefix="whalecast-model-") as private:
            checked = Path(private) / MODEL_FILE
            checked.write_bytes(data)
            return keras.saving.load_model(checked, safe_mode=True, compile=False)
    except Exception as e:  # untrusted input: any failure to deserialize is a refusal
        raise RefusalReason(f"Keras could not load {MODEL_FILE}: {type(e).__name__}: {e}") from e


def check_shapes(model: Any, preprocess: Preprocess) -> None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise RefusalReason("the model must have exactly one input and one output")
    expected = (preprocess.window, len(preprocess.features))
    found = tuple(model.inputs[0].shape[1:])
    if found != expected:
        raise RefusalReason(f"input shape {found} does not match (window, features) {expected}")
    out = tuple(model.outputs[0].shape[1:])
    if out not in ((1,), ()):
        raise RefusalReason(f"output shape {out} is not one value per sample")


def warmup_batch(preprocess: Preprocess, rows: int, seed: int = 0) -> np.ndarray:
    """Scaled-space input (standard normal, like real scaled features)."""
    rng = np.random.default_rng(seed + rows)
    shape = (rows, preprocess.window, len(preprocess.features))
    return rng.standard_normal(shape).astype(np.float32)


@dataclass(frozen=True)
class Reference:
    """The warm-up batches and the Keras model's own output on each: what every faster
    path (a backend, incremental steps) must match to :data:`TOLERANCE`."""

    batches: list[np.ndarray]
    outputs: list[np.ndarray]

    def mismatch(self, run: Callable[[np.ndarray], np.ndarray]) -> tuple[int, float] | None:
        """The first batch on which ``run`` differs from Keras: its size and the largest
        difference; None when every batch matches."""
        for batch, want in zip(self.batches, self.outputs, strict=True):
            got = run(batch)
            if not np.allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE):
                return len(batch), float(np.max(np.abs(got.astype(np.float64) - want)))
        return None
