"""Ways to run one model over a batch of scaled windows.

Every backend maps a float32 array ``(n, window, features)`` to the model's raw
output ``(n, outputs)`` (one column per unit of its last layer) and is checked
against the Keras model's output by the runtime.

- ``onnx``: the artifact's ONNX full-window graph (:mod:`whalecast.graphs`, exported
  by the trainer) run by onnxruntime with one intra-op thread per usable core; no
  TensorFlow is imported. Its CPU memory arena keeps the buffers of the largest batch
  it has seen for ever (650 MB after one batch of 5000 for seed 004), so batches are
  split into chunks of at most :data:`ONNX_MAX_CHUNK` rows: 35 MB of arena for seed
  004 at 256 rows, 135 MB at 1024, and 1000 series took no longer in chunks of 256
  than of 1024 here (the prime graph is run in the same chunks); with the arena off it
  measured about 1.4x slower. Every session of the process shares one arena
  (:func:`shared_arena`).
- ``keras``, ``tf-function``, ``tf-xla``: the Keras model under TensorFlow
  (:mod:`inference.tf_backends`, imported only when one of them is chosen).

onnxruntime uses CUDA when its build has it; TensorFlow uses a GPU when it sees one.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

BACKENDS = ("keras", "tf-function", "tf-xla", "onnx")
TF_BACKENDS = ("keras", "tf-function", "tf-xla")
ONNX_MAX_CHUNK = 256
ONNX_MISSING = "the onnx backend needs onnxruntime: pip install whalecast"


class BackendError(Exception):
    """A backend could not be built for this model."""


class Backend(ABC):
    name: str

    @abstractmethod
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Raw model output, shape ``(n, outputs)`` float32, for scaled windows ``x``."""


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


class ChunkedBackend(Backend):
    """Splits a batch into chunks (at most the largest bucket); subclasses run one chunk."""

    def __init__(self, buckets: Sequence[int], pad: bool, max_chunk: int | None = None) -> None:
        self.buckets = normalise_buckets(buckets)
        self.pad = pad
        self.step = min(self.buckets[-1], max_chunk or self.buckets[-1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        parts: list[np.ndarray] = []
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
            out = self.run(np.ascontiguousarray(chunk))
            parts.append(out.reshape(len(chunk), -1)[:rows])
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.empty((0, 1), dtype=np.float32)

    @abstractmethod
    def run(self, chunk: np.ndarray) -> np.ndarray: ...


class OnnxBackend(ChunkedBackend):
    """The artifact's full-window ONNX graph run by onnxruntime."""

    name = "onnx"

    def __init__(self, graph: bytes, buckets: Sequence[int], threads: int | None = None) -> None:
        super().__init__(buckets, pad=False, max_chunk=ONNX_MAX_CHUNK)
        self.session = onnx_session(graph, threads)
        self.input_name = self.session.get_inputs()[0].name

    def run(self, chunk: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: chunk})[0], dtype=np.float32)


@cache
def shared_arena(ort: Any) -> None:
    """One CPU memory arena for every session of the process (registered once).

    Each session had its own arena, each keeping the buffers of its largest run: a
    daemon serving two models holds six sessions (full, prime, step). The passes run
    one at a time, so one arena sized by the largest run serves them all: 50 MB less
    RSS with the two benchmark models primed and run over 1000 series here.
    """
    info = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))


def onnx_session(graph: bytes, threads: int | None = None) -> Any:
    """An onnxruntime session of ``graph`` (CUDA when the build has it, else the CPU)."""
    try:
        import onnxruntime as ort  # noqa: PLC0415 - only when this backend is chosen
    except ImportError as e:
        raise BackendError(ONNX_MISSING) from e

    options = ort.SessionOptions()
    shared_arena(ort)
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
    providers = [p for p in wanted if p in ort.get_available_providers()]
    try:
        return ort.InferenceSession(graph, options, providers=providers)
    except Exception as e:  # an untrusted graph: onnxruntime raises its own types
        raise BackendError(f"onnxruntime cannot load the graph: {type(e).__name__}: {e}") from e
