"""The artifact's ONNX graphs, exported from the Keras model (:mod:`whalecast.graphs`).

The trainer calls :func:`add_graphs` on every version it writes; ``whalecast
export-onnx`` calls it on a version trained before graphs existed. The full-window
graph, and the prime and step graphs when the model splits, are converted with
tf2onnx from the same ``tf.function`` the TensorFlow backends run. Before anything is
written the exported graphs are run with onnxruntime on the check batches and must
match the Keras model to :data:`TOLERANCE` (a step graph that does not is left out,
with the reason, and the model is then served by full passes; a full graph that does
not is an error).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from training import artifacts
from whalecast.artifact import ArtifactError, Preprocess
from whalecast.graphs import (
    CHECK_ROWS,
    FULL_GRAPH,
    PRIME_GRAPH,
    STEP_GRAPH,
    GraphsManifest,
    check_batch,
    describe,
    encode_batch,
    write_graphs,
)
from whalecast.keras_split import Incremental, NotIncremental
from whalecast.logs import get_logger

log = get_logger(__name__)

ONNX_OPSET = 17
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Exported:
    manifest: GraphsManifest
    graphs: dict[str, bytes]


def add_graphs(directory: Path) -> GraphsManifest:
    """Export ``directory``'s Keras model to ONNX and write the graphs and their manifest."""
    loaded = artifacts.load(Path(directory))
    return write_for(loaded.directory, loaded.model, loaded.preprocess)


def write_for(directory: Path, model: Any, preprocess: Preprocess) -> GraphsManifest:
    """Export ``model`` (the version's Keras model, in memory) into ``directory``."""
    exported = export(model, preprocess.window, len(preprocess.features))
    write_graphs(directory, exported.manifest, exported.graphs)
    m = exported.manifest
    log.info(
        "onnx_graphs_written", directory=str(directory), step=m.step is not None,
        incremental_off=m.incremental_off or None, states=m.states,
    )  # fmt: skip
    return m


def export(model: Any, window: int, features: int) -> Exported:
    """The graphs of ``model`` and their manifest, checked with onnxruntime against Keras."""
    batches = [check_batch(window, features, rows) for rows in CHECK_ROWS]
    wanted = [np.asarray(model.predict_on_batch(b), np.float32).reshape(-1) for b in batches]
    if not all(np.isfinite(w).all() for w in wanted):
        raise ArtifactError("the model returns non-finite values on the check batches")
    spec = (tf.TensorSpec((None, window, features), tf.float32, name="windows"),)
    full = tf.function(lambda x: model(x, training=False), input_signature=spec)
    graphs = {FULL_GRAPH: convert(full, spec)}
    try:
        worst = _worst(lambda b: run(graphs[FULL_GRAPH], {"windows": b})[0], batches, wanted)
    except Exception as e:  # onnxruntime refusing a converted graph: the export failed
        raise ArtifactError(f"the ONNX graph does not run: {type(e).__name__}: {e}") from e
    if worst > TOLERANCE:
        raise ArtifactError(f"the ONNX graph differs from Keras by {worst:.3g}")
    states, off = _export_split(
        model, window=window, features=features, batches=batches, wanted=wanted, graphs=graphs
    )
    manifest = GraphsManifest(
        opset=ONNX_OPSET, window=window, features=features,
        full=describe(FULL_GRAPH, graphs[FULL_GRAPH]),
        prime=describe(PRIME_GRAPH, graphs[PRIME_GRAPH]) if PRIME_GRAPH in graphs else None,
        step=describe(STEP_GRAPH, graphs[STEP_GRAPH]) if STEP_GRAPH in graphs else None,
        states=states, incremental_off=off,
        check=[encode_batch(b, w) for b, w in zip(batches, wanted, strict=True)],
    )  # fmt: skip
    return Exported(manifest, graphs)


def _export_split(
    model: Any,
    *,
    window: int,
    features: int,
    batches: list[np.ndarray],
    wanted: list[np.ndarray],
    graphs: dict[str, bytes],
) -> tuple[list[int], str]:
    """Adds the prime and step graphs to ``graphs`` when the model splits and they match
    Keras; returns the state widths and, when they are left out, why."""
    try:
        split = Incremental(model, window, features)
    except NotIncremental as e:
        return [], str(e)
    prime_function, step_function = split.functions
    prime = convert(prime_function, split.prime_signature)
    step = convert(step_function, split.step_signature)
    names = [s.name for s in split.step_signature]

    def stepped(batch: np.ndarray) -> np.ndarray:
        states = run(prime, {"older": np.ascontiguousarray(batch[:, :-1])})
        feed = dict(zip(names, [np.ascontiguousarray(batch[:, -1:]), *states], strict=True))
        return run(step, feed)[0]

    worst = _worst(stepped, batches, wanted)
    if worst > TOLERANCE:
        return [], f"the ONNX step graph differs from Keras by {worst:.3g}"
    graphs[PRIME_GRAPH], graphs[STEP_GRAPH] = prime, step
    return [int(s.shape[-1]) for s in split.step_signature[1:]], ""


def convert(function: Any, signature: tuple[Any, ...]) -> bytes:
    """Serialized ONNX graph of a ``tf.function`` with a dynamic batch dimension."""
    import tf2onnx  # noqa: PLC0415 - slow import, only when exporting

    try:
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=signature, opset=ONNX_OPSET
        )
    except Exception as e:  # tf2onnx raises many unrelated types on unsupported graphs
        raise ArtifactError(f"ONNX export failed: {type(e).__name__}: {e}") from e
    return bytes(proto.SerializeToString())


def run(graph: bytes, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort  # noqa: PLC0415 - only when exporting

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    return [np.asarray(out, dtype=np.float32) for out in session.run(None, feed)]


def _worst(run_batch: Any, batches: list[np.ndarray], wanted: list[np.ndarray]) -> float:
    """The largest relative-or-absolute difference from Keras over the check batches."""
    worst = 0.0
    for batch, want in zip(batches, wanted, strict=True):
        got = np.asarray(run_batch(batch), np.float64).reshape(-1)
        gap = np.abs(got - want) / np.maximum(1.0, np.abs(want))
        worst = max(worst, float(gap.max()))
    return worst
