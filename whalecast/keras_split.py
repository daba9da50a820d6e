"""A Keras recurrent model split in two: the state after the older rows, and one step.

A series' prediction at bar ``t`` runs the network over its window, rows ``t-W+1 .. t``,
from a zero state. Every row but the newest was known one bar earlier, so between bars
the daemon runs the recurrent layers over those ``W-1`` rows and keeps their final state
(:meth:`Incremental.prime`); when bar ``t`` closes, only the newest row goes through the
network, from that state (:meth:`Incremental.step`). It is the same recurrence, split in
two: about ``1/W`` of the work is left on the bar's critical path.

Which models qualify: those whose time steps meet only inside LSTM, GRU or SimpleRNN
layers (forward, not stateful), where every other layer that sees the time axis acts on
each step alone (``Dense``, ``Dropout``, ``Activation``, a normalization over the feature
axis, element-wise merges), nested models included (the ensemble's members). Anything
else raises :class:`NotIncremental` with the reason, and the model is served with
full-window passes only.

The split is part of the artifact format: the daemon's TensorFlow backends run it as
``tf.function`` pair, and the trainer exports the same pair as the artifact's ONNX
prime and step graphs (:mod:`whalecast.graphs`), which the ``onnx`` backend serves
without TensorFlow. This module imports TensorFlow: only those two import it.

The functions run the model's own graph with its recurrent layers swapped for twins that
also return their state (same weights). Walking a functional graph uses Keras'
``Function._run_through_graph`` (the same walk ``Model.call`` does): if a Keras release
changes it, building fails, the model is served by full passes and the reason is logged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

RECURRENT = (layers.LSTM, layers.GRU, layers.SimpleRNN)
#: Layers that, given a sequence, act on each time step on its own.
PER_STEP = (
    layers.Activation,
    layers.Add,
    layers.Average,
    layers.BatchNormalization,
    layers.Dense,
    layers.Dropout,
    layers.LayerNormalization,
    layers.Maximum,
    layers.Minimum,
    layers.Multiply,
    layers.Normalization,
    layers.Subtract,
)
FEATURE_AXIS = (layers.BatchNormalization, layers.LayerNormalization, layers.Normalization)


class NotIncremental(Exception):
    """This model cannot be split into a primed state and one step; the reason says why."""


def recurrent_layers(model: keras.Model) -> list[Any]:
    """The model's recurrent layers in call order, nested models included.

    Raises :class:`NotIncremental` for a layer that mixes time steps other than a
    forward recurrent one, or that is shared (called more than once).
    """
    found: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += recurrent_layers(layer)
        elif isinstance(layer, RECURRENT):
            if layer.go_backwards or layer.stateful:
                raise NotIncremental(f"layer {layer.name} runs backwards or is stateful")
            found.append(layer)
        elif not isinstance(layer, layers.InputLayer) and _sees_time(layer):
            _check_per_step(layer)
    return found


def _sees_time(layer: Any) -> bool:
    try:
        inputs = keras.tree.flatten(layer.input)
    except (AttributeError, ValueError) as e:  # called more than once, or never
        raise NotIncremental(f"layer {layer.name} is shared or unused") from e
    return any(len(tensor.shape) >= 3 for tensor in inputs)


def _check_per_step(layer: Any) -> None:
    if not isinstance(layer, PER_STEP):
        raise NotIncremental(f"layer {layer.name} ({type(layer).__name__}) mixes time steps")
    if isinstance(layer, FEATURE_AXIS):
        axes = layer.axis if isinstance(layer.axis, list | tuple) else [layer.axis]
        rank = len(layer.input.shape)
        if [a % rank for a in axes] != [rank - 1]:
            raise NotIncremental(f"layer {layer.name} normalizes over more than the features")


def _twin(layer: Any) -> Any:
    """The same recurrent layer (same weights) returning its full sequence and its state."""
    config = layer.get_config() | {
        "return_sequences": True,
        "return_state": True,
        "name": f"{layer.name}_incremental",
    }
    twin = type(layer).from_config(config)
    twin(np.zeros((1, 1, layer.input.shape[-1]), dtype=np.float32))  # builds it
    twin.set_weights(layer.get_weights())
    return twin


class Incremental:
    """A model split into :meth:`prime` (the older rows → states) and :meth:`step`."""

    def __init__(self, model: keras.Model, window: int, n_features: int) -> None:
        if window < 2:
            raise NotIncremental("a window of one row has nothing to prime")
        self.model = model
        self.recurrent = recurrent_layers(model)
        if not self.recurrent:
            raise NotIncremental("the model has no recurrent layer")
        self.twins = {id(layer): _twin(layer) for layer in self.recurrent}
        older = tf.TensorSpec((None, window - 1, n_features), tf.float32, name="older")
        #: the input signatures of the pair (the names are the ONNX graphs' input names)
        self.prime_signature = (older,)
        # Traced once each (the batch axis is free) and called as concrete functions:
        # TensorFlow counts the traces of tf.functions by their code, which every loaded
        # version shares, and warned of "retracing" after a few loads.
        self._prime_function = tf.function(self._prime_graph, input_signature=[older])
        self._prime = self._prime_function.get_concrete_function()
        shapes = [s.shape[1:] for s in self._prime(tf.zeros((1, window - 1, n_features)))]
        self._counts = [len(self._states_of(layer)) for layer in self.recurrent]
        newest = tf.TensorSpec((None, 1, n_features), tf.float32, name="newest")
        states = [
            tf.TensorSpec((None, *shape), tf.float32, name=f"state_{i}")
            for i, shape in enumerate(shapes)
        ]
        self.step_signature = (newest, *states)
        self._step_function = tf.function(self._step_graph, input_signature=[newest, *states])
        self._step = self._step_function.get_concrete_function()

    @property
    def functions(self) -> tuple[Any, Any]:
        """The ``(prime, step)`` tf.function pair, for export."""
        return self._prime_function, self._step_function

    def prime(self, older: np.ndarray) -> list[np.ndarray]:
        """States ``[(n, units), ...]`` after the scaled rows ``older`` ``(n, W-1, f)``."""
        return [np.asarray(s) for s in self._prime(older)]

    def step(self, newest: np.ndarray, states: Sequence[np.ndarray]) -> np.ndarray:
        """Raw model output ``(n, outputs)`` for the newest scaled rows ``(n, 1, f)`` from
        ``states``."""
        return np.asarray(self._step(newest, *states), dtype=np.float32).reshape(len(newest), -1)

    # --- the graphs -------------------------------------------------------------------------

    def _states_of(self, layer: Any) -> list[int]:
        size = layer.cell.state_size
        return list(size) if isinstance(size, list | tuple) else [size]

    def _prime_graph(self, older: tf.Tensor) -> list[tf.Tensor]:
        taken: dict[int, list[tf.Tensor]] = {}
        self._run(self.model, older, {}, taken)
        return [state for layer in self.recurrent for state in taken[id(layer)]]

    def _step_graph(self, newest: tf.Tensor, *states: tf.Tensor) -> tf.Tensor:
        given: dict[int, list[tf.Tensor]] = {}
        start = 0
        for layer, count in zip(self.recurrent, self._counts, strict=True):
            given[id(layer)] = list(states[start : start + count])
            start += count
        return self._run(self.model, newest, given, {})

    def _run(
        self,
        model: keras.Model,
        x: tf.Tensor,
        given: dict[int, list[tf.Tensor]],
        taken: dict[int, list[tf.Tensor]],
    ) -> tf.Tensor:
        """The model's graph on ``x`` with each recurrent layer replaced by its twin."""

        def operation(op: Any) -> Callable[..., Any]:
            if isinstance(op, keras.Model):
                return lambda inputs, *_a, **_k: self._run(op, inputs, given, taken)
            if id(op) in self.twins:
                return lambda inputs, *_a, **_k: self._recur(op, inputs, given, taken)
            return op  # type: ignore[no-any-return]

        if isinstance(model, keras.Sequential):
            for layer in model.layers:
                x = operation(layer)(x)
            return x
        try:
            out = model._run_through_graph(x, operation_fn=operation)  # Keras-internal: module doc
        except AttributeError as e:
            raise NotIncremental(f"this Keras cannot walk the model's graph: {e}") from e
        return out[0] if isinstance(out, list | tuple) else out

    def _recur(
        self,
        layer: Any,
        inputs: tf.Tensor,
        given: dict[int, list[tf.Tensor]],
        taken: dict[int, list[tf.Tensor]],
    ) -> tf.Tensor:
        twin = self.twins[id(layer)]
        initial = given.get(id(layer))
        sequence, *state = twin(inputs, initial_state=initial) if initial else twin(inputs)
        taken[id(layer)] = state
        return sequence if layer.return_sequences else sequence[:, -1]
