"""Serving from the artifact's ONNX graphs with onnxruntime: no TensorFlow, no Keras.

:func:`load_verified` reads the version's graphs (:mod:`whalecast.graphs`, each checked
against its manifest's checksum), and

- refuses the version when the full-window graph's input is not ``(window, features)``
  of its ``preprocess.json``, or the stored Keras output has another number of
  columns than its outputs, or the graph's output differs from the Keras output stored with
  the check batches by more than :data:`~inference.checks.TOLERANCE`, or is not finite;
- serves incremental steps from the prime and step graphs when the artifact has them
  and prime-then-step matches the full-window graph on the check batches to the same
  tolerance; otherwise full passes only, with the reason (as under TensorFlow).

A graph is loaded from its checked bytes, so onnxruntime reads no other file (an ONNX
graph naming external data cannot be loaded from bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.backends import ONNX_MAX_CHUNK, Backend, BackendError, OnnxBackend, onnx_session
from inference.checks import TOLERANCE, Reference, RefusalReason, check_outputs
from inference.incremental import Stepper
from whalecast.artifact import Preprocess
from whalecast.graphs import Graphs, read_graphs


class OnnxSplit:
    """The prime and step graphs run by onnxruntime (a :class:`Stepper`)."""

    def __init__(self, prime: bytes, step: bytes, n_states: int) -> None:
        self._prime = onnx_session(prime)
        self._step = onnx_session(step)
        self._older = self._prime.get_inputs()[0].name
        names = [i.name for i in self._step.get_inputs()]
        if len(names) != n_states + 1 or len(self._prime.get_outputs()) != n_states:
            raise BackendError(f"the prime and step graphs do not pass {n_states} states")
        self._newest, self._states = names[0], names[1:]

    def prime(self, older: np.ndarray) -> list[np.ndarray]:
        """States ``[(n, units), ...]`` after the scaled rows ``older`` ``(n, W-1, f)``."""
        step = ONNX_MAX_CHUNK  # chunked like full passes: the arena keeps the largest batch's
        chunks = [
            self._prime.run(None, {self._older: np.ascontiguousarray(older[i : i + step])})
            for i in range(0, len(older), step)
        ]
        return [
            np.concatenate(parts).astype(np.float32, copy=False)
            for parts in zip(*chunks, strict=True)
        ]

    def step(self, newest: np.ndarray, states: Sequence[np.ndarray]) -> np.ndarray:
        """Raw model output ``(n, outputs)`` for the newest scaled rows ``(n, 1, f)`` from
        ``states``."""
        feed = {self._newest: np.ascontiguousarray(newest)}
        feed.update(zip(self._states, (np.ascontiguousarray(s) for s in states), strict=True))
        out = self._step.run(None, feed)[0]
        return np.asarray(out, dtype=np.float32).reshape(len(newest), -1)


def load_verified(
    directory: Path, preprocess: Preprocess, buckets: Sequence[int], incremental: bool
) -> tuple[Backend, Stepper | None, str]:
    """The full-window backend, checked against the stored Keras output, and the split."""
    try:
        graphs = read_graphs(directory)
    except Exception as e:  # ArtifactError and bad bytes alike: the version is refused
        raise RefusalReason(str(e)) from e
    check_shapes(graphs, preprocess)
    batches = graphs.check_batches()
    reference = Reference([b for b, _ in batches], [w for _, w in batches])
    check_outputs(reference.outputs[0].shape[1], preprocess)
    if not all(np.isfinite(w).all() for w in reference.outputs):
        raise RefusalReason("non-finite Keras output stored with the check batches")
    backend = OnnxBackend(graphs.full, buckets)
    found = _mismatch(reference, backend)
    if found is not None:
        raise RefusalReason(
            f"backend onnx differs from Keras by {found[1]:.3g} on a batch of {found[0]} "
            f"(tolerance {TOLERANCE})"
        )
    if not incremental:
        return backend, None, "disabled"
    split, off = build_split(graphs, reference, backend)
    return backend, split, off


def check_shapes(graphs: Graphs, preprocess: Preprocess) -> None:
    m = graphs.manifest
    expected = (preprocess.window, len(preprocess.features))
    if (m.window, m.features) != expected:
        raise RefusalReason(
            f"the ONNX graphs take (window, features) {(m.window, m.features)}, "
            f"preprocess.json {expected}"
        )


def build_split(
    graphs: Graphs, reference: Reference, backend: Backend
) -> tuple[Stepper | None, str]:
    """The prime and step graphs, if the artifact has them and they match the full graph."""
    m = graphs.manifest
    if graphs.prime is None or graphs.step is None:
        return None, m.incremental_off or "the artifact has no ONNX step graph"
    full = Reference(reference.batches, [backend(b) for b in reference.batches])
    try:
        split = OnnxSplit(graphs.prime, graphs.step, len(m.states))
        found = _mismatch(full, lambda b: split.step(b[:, -1:], split.prime(b[:, :-1])))
    except Exception as e:  # noqa: BLE001 - an untrusted graph: fall back to full passes
        return None, f"{type(e).__name__}: {e}"
    if found is not None:
        return None, f"steps differ from the full pass by {found[1]:.3g}"
    return split, ""


def _mismatch(reference: Reference, run: Any) -> tuple[int, float] | None:
    try:
        return reference.mismatch(run)
    except Exception as e:  # running an untrusted graph: any failure is a refusal
        raise RefusalReason(f"backend onnx failed: {type(e).__name__}: {e}") from e
