"""The TensorFlow backends (see :mod:`inference.backends`): imported only when chosen.

- ``keras``: ``model.predict_on_batch``, the reference (no per-call ``predict``
  overhead, but Keras' dispatch on every call).
- ``tf-function``: one ``tf.function`` per batch bucket with a fixed input
  signature, traced at load; batches are zero-padded up to the next bucket and
  split at the largest one, so a bar never triggers a retrace.
- ``tf-xla``: the same, compiled with XLA (``jit_compile=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from inference.backends import TF_BACKENDS, Backend, BackendError, ChunkedBackend


class KerasBackend(Backend):
    name = "keras"

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.model.predict_on_batch(x)
        return np.asarray(out, dtype=np.float32).reshape(len(x), -1)


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


def keras_reference(model: Any, x: np.ndarray) -> np.ndarray:
    """The model called eagerly: what a loaded model is checked against.

    Not ``predict_on_batch``: that traces its graph again for every new batch shape
    and model, and TensorFlow warns about the retracing at every load (the warm-up
    batches have three sizes), though no bar ever retraces.
    """
    out = model(tf.convert_to_tensor(x), training=False)
    return np.asarray(out, dtype=np.float32).reshape(len(x), -1)


def make_tf_backend(name: str, model: Any, buckets: Sequence[int]) -> Backend:
    if name == "keras":
        return KerasBackend(model)
    if name in ("tf-function", "tf-xla"):
        return TfFunctionBackend(model, buckets, xla=name == "tf-xla")
    raise BackendError(f"{name!r} is not a TensorFlow backend (one of {', '.join(TF_BACKENDS)})")
