"""Ways to run one loaded Keras model over a batch of scaled windows.

Every backend maps a float32 array ``(n, window, features)`` to the model's raw
output ``(n,)`` and is checked against the Keras reference by the runtime.

- ``keras``: ``model.predict_on_batch``, the reference (no per-call ``predict``
  overhead, but Keras' dispatch on every call).
- ``tf-function``: one ``tf.function`` per batch bucket with a fixed input
  signature, traced at load; batches are zero-padded up to the next bucket and
  split at the largest one, so a bar never triggers a retrace.
- ``tf-xla``: the same, compiled with XLA (``jit_compile=True``).
- ``onnx``: the model exported with tf2onnx at load (in memory) and run by
  onnxruntime with one intra-op thread per usable core. Its CPU memory arena
  keeps the buffers of the largest batch it has seen for ever (650 MB after one
  batch of 5000 for seed 004), so batches are split into chunks of at most
  :data:`ONNX_MAX_CHUNK` rows (about 140 MB of arena); with the arena off it
  measured about 1.4x slower here, and larger chunks were no faster.

TensorFlow uses a GPU when it sees one; onnxruntime uses CUDA when its build has it.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

BACKENDS = ("keras", "tf-function", "tf-xla", "onnx")
ONNX_OPSET = 17
ONNX_MAX_CHUNK = 1024
ONNX_MISSING = "the onnx backend needs onnxruntime and tf2onnx: pip install 'whalecast[onnx]'"


class BackendError(Exception):
    """A backend could not be built for this model."""


class Backend(ABC):
    name: str

    @abstractmethod
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Raw model output, shape ``(n,)`` float32, for scaled windows ``x``."""


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``n`` rows (callers split at the largest first)."""
    for size in buckets:
        if size >= n:
            return size
    raise ValueError(f"{n} rows exceed the largest bucket {buckets[-1]}")


def normalise_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(sorted({int(b) for b in buckets}))
    if not sizes or sizes[0] < 1:
        raise BackendError("inference.batch_buckets must hold positive sizes")
    return sizes


class KerasBackend(Backend):
    name = "keras"

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.model.predict_on_batch(x)
        return np.asarray(out, dtype=np.float32).reshape(len(x))


class ChunkedBackend(Backend):
    """Splits a batch into chunks (at most the largest bucket); subclasses run one chunk."""

    def __init__(self, buckets: Sequence[int], pad: bool, max_chunk: int | None = None) -> None:
        self.buckets = normalise_buckets(buckets)
        self.pad = pad
        self.step = min(self.buckets[-1], max_chunk or self.buckets[-1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        out = np.empty(n, dtype=np.float32)
        step = self.step
        for start in range(0, n, step):
            chunk = x[start : start + step]
            rows = len(chunk)
            if self.pad:
                size = bucket_for(rows, self.buckets)
                if size != rows:
                    padded = np.zeros((size, *chunk.shape[1:]), dtype=np.float32)
                    padded[:rows] = chunk
                    chunk = padded
            out[start : start + rows] = self.run(np.ascontiguousarray(chunk)).reshape(-1)[:rows]
        return out

    @abstractmethod
    def run(self, chunk: np.ndarray) -> np.ndarray: ...


class TfFunctionBackend(ChunkedBackend):
    """One traced (optionally XLA-compiled) concrete function per bucket size."""

    def __init__(self, model: Any, buckets: Sequence[int], xla: bool) -> None:
        super().__init__(buckets, pad=True)
        self.name = "tf-xla" if xla else "tf-function"
        _, window, features = model.inputs[0].shape
        self._functions: dict[int, Any] = {}
        for size in self.buckets:
            spec = tf.TensorSpec((size, window, features), tf.float32)
            function = tf.function(
                lambda x: model(x, training=False), input_signature=[spec], jit_compile=xla
            )
            concrete = function.get_concrete_function()
            concrete(tf.zeros((size, window, features), tf.float32))  # compile now, not at a bar
            self._functions[size] = concrete

    def run(self, chunk: np.ndarray) -> np.ndarray:
        result = self._functions[len(chunk)](chunk)
        return np.asarray(result, dtype=np.float32)


class OnnxBackend(ChunkedBackend):
    """The model exported to ONNX in memory and run by onnxruntime."""

    name = "onnx"

    def __init__(self, model: Any, buckets: Sequence[int], threads: int | None = None) -> None:
        super().__init__(buckets, pad=False, max_chunk=ONNX_MAX_CHUNK)
        try:
            import onnxruntime as ort  # noqa: PLC0415 - only when this backend is chosen
        except ImportError as e:
            raise BackendError(ONNX_MISSING) from e

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or usable_cores()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
        providers = [p for p in wanted if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(export_onnx(model), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def run(self, chunk: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: chunk})[0], dtype=np.float32)


def export_onnx(model: Any) -> bytes:
    """Serialized ONNX graph of ``model`` in inference mode (dynamic batch dimension)."""
    try:
        import tf2onnx  # noqa: PLC0415 - only when this backend is chosen (slow import)
    except ImportError as e:
        raise BackendError(ONNX_MISSING) from e

    _, window, features = model.inputs[0].shape
    spec = (tf.TensorSpec((None, window, features), tf.float32, name="windows"),)
    function = tf.function(lambda x: model(x, training=False), input_signature=spec)
    try:
        proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=ONNX_OPSET)
    except Exception as e:  # tf2onnx raises many unrelated types on unsupported graphs
        raise BackendError(f"ONNX export failed: {type(e).__name__}: {e}") from e
    return bytes(proto.SerializeToString())


def make_backend(name: str, model: Any, buckets: Sequence[int]) -> Backend:
    if name == "keras":
        return KerasBackend(model)
    if name in ("tf-function", "tf-xla"):
        return TfFunctionBackend(model, buckets, xla=name == "tf-xla")
    if name == "onnx":
        return OnnxBackend(model, buckets)
    raise BackendError(f"unknown inference backend {name!r} (one of {', '.join(BACKENDS)})")
