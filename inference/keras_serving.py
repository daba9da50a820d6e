"""Serving the Keras model under TensorFlow: load, shape checks, backend and split.

Imported by the runtime only when a TensorFlow backend is chosen; the ``onnx``
backend serves from the artifact's graphs (:mod:`inference.onnx_serving`) and
never imports TensorFlow.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from inference.backends import Backend, BackendError
from inference.checks import (
    TOLERANCE,
    WARMUP_SIZES,
    Reference,
    RefusalReason,
    check_outputs,
    warmup_batch,
)
from inference.incremental import Stepper
from inference.safety import read_model_archive
from inference.tf_backends import keras_reference, make_tf_backend
from whalecast.artifact import MODEL_FILE, Preprocess
from whalecast.keras_split import Incremental, NotIncremental


def load_verified(
    directory: Path, preprocess: Preprocess, name: str, buckets: Sequence[int], incremental: bool
) -> tuple[Backend, Stepper | None, str]:
    """The backend ``name`` and, if asked for and possible, the split; checked against Keras."""
    model = load_keras_model(directory / MODEL_FILE)
    check_shapes(model, preprocess)
    backend, reference = build_verified_backend(model, preprocess, name, buckets)
    if not incremental:
        return backend, None, "disabled"
    split, off = build_incremental(model, preprocess, reference)
    return backend, split, off


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
    if out == ():
        out = (1,)
    if len(out) != 1 or out[0] is None:
        raise RefusalReason(f"output shape {out} is not a vector of values per sample")
    check_outputs(int(out[0]), preprocess)


def build_verified_backend(
    model: Any, preprocess: Preprocess, name: str, buckets: Sequence[int]
) -> tuple[Backend, Reference]:
    """The backend, after the Keras reference is finite and the backend matches it; and
    that reference, for the other paths to be checked against."""
    batches = [warmup_batch(preprocess, rows) for rows in WARMUP_SIZES]
    try:
        reference = Reference(batches, [keras_reference(model, batch) for batch in batches])
        if not all(np.isfinite(out).all() for out in reference.outputs):
            raise RefusalReason("non-finite output on the warm-up batch")
        backend = make_tf_backend(name, model, buckets)
        if name == "keras":  # Keras itself: the reference's own graph, traced per batch shape
            return backend, reference
        found = reference.mismatch(backend)
    except (BackendError, RefusalReason):
        raise
    except Exception as e:  # running an untrusted graph: any failure is a refusal
        raise RefusalReason(f"backend {name} failed: {type(e).__name__}: {e}") from e
    if found is not None:
        rows, worst = found
        raise RefusalReason(
            f"backend {name} differs from Keras by {worst:.3g} on a batch of {rows} "
            f"(tolerance {TOLERANCE})"
        )
    return backend, reference


def build_incremental(
    model: Any, preprocess: Preprocess, reference: Reference
) -> tuple[Incremental | None, str]:
    """The model split into prime and step, if it splits and matches the Keras reference;
    else ``None`` and the reason (the model is then served by full passes)."""
    try:
        split = Incremental(model, preprocess.window, len(preprocess.features))
        found = reference.mismatch(lambda b: split.step(b[:, -1:], split.prime(b[:, :-1])))
        if found is not None:
            return None, f"steps differ from the full pass by {found[1]:.3g}"
    except NotIncremental as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - building from an untrusted graph: fall back to full passes
        return None, f"{type(e).__name__}: {e}"
    return split, ""
