"""Model presets from the seed documents: Keras builders for the tables in :mod:`training.params`.

Each builder turns resolved hyper-parameters into a compiled model with a fixed input
``(None, window, n_features)``. Only built-in layers are used, so the daemon loads every
artifact with ``safe_mode=True`` and may export it to ONNX.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
from keras import layers, regularizers

from training.params import TARGETS, HyperParams, PresetError
from whalecast.targets import VOLUME


@keras.saving.register_keras_serializable(package="whalecast")
class Pinball(keras.losses.Loss):  # type: ignore[misc]
    """The mean quantile (pinball) loss over the outputs, output ``j`` at level
    ``levels[j]``: minimised when output ``j`` is the ``levels[j]`` quantile of its target."""

    def __init__(self, levels: list[float], name: str = "pinball", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.levels = [float(q) for q in levels]

    def call(self, y_true: Any, y_pred: Any) -> Any:
        q = keras.ops.convert_to_tensor(self.levels, dtype=y_pred.dtype)
        miss = keras.ops.cast(y_true, y_pred.dtype) - y_pred
        return keras.ops.mean(keras.ops.maximum(q * miss, (q - 1.0) * miss), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "levels": self.levels}


# --- builders: each returns an uncompiled model on Input(window, n_features) -------------------


def _volume(params: HyperParams, window: int, n_features: int) -> keras.Model:
    inputs = keras.Input((window, n_features), name="window")
    x = layers.LSTM(params["units"], activation=params["activation"], name="lstm")(inputs)
    outputs = layers.Dense(1, name="log_volume_next")(x)
    return keras.Model(inputs, outputs, name="volume")


def _wide(
    name: str, probability: bool, out: str = ""
) -> Callable[[HyperParams, int, int], keras.Model]:
    """Wide and deep: ``Dense(k)`` over the flattened window (the layer ``linear``, which the
    trainer may start at the strong baseline's fit over the same window) plus the residual
    of an LSTM branch that starts at zero; a sigmoid on the sum for a probability. ``k`` is
    1, or one unit per output of a multi-horizon preset (``horizons`` x ``quantiles``)."""

    def build(params: HyperParams, window: int, n_features: int) -> keras.Model:
        k = len(params["horizons"]) * max(1, len(params.get("quantiles") or [])) if out else 1
        inputs = keras.Input((window, n_features), name="window")
        wide = layers.Dense(k, name="linear")(layers.Flatten(name="flat_window")(inputs))
        x = layers.LSTM(params["units"], name="lstm")(inputs)
        x = layers.Dense(params["dense_units"], activation="relu", name="dense")(x)
        deep = layers.Dense(k, kernel_initializer="zeros", name="residual")(x)
        if not probability:
            outputs = layers.Add(name=out or "log_volume_next")([wide, deep])
        else:
            logit = layers.Add(name="logit")([wide, deep])
            outputs = layers.Activation("sigmoid", name=out or "p_up")(logit)
        return keras.Model(inputs, outputs, name=name)

    return build


def _direction(params: HyperParams, window: int, n_features: int) -> keras.Model:
    inputs = keras.Input((window, n_features), name="window")
    x = layers.LSTM(params["units"], name="lstm")(inputs)
    x = layers.Dropout(params["dropout"], name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_up")(x)
    return keras.Model(inputs, outputs, name="direction")


def _deep(cell: type[layers.Layer], name: str) -> Callable[[HyperParams, int, int], keras.Model]:
    def build(params: HyperParams, window: int, n_features: int) -> keras.Model:
        reg = regularizers.L2(params["l2"])
        inputs = keras.Input((window, n_features), name="window")
        x = cell(params["units"], return_sequences=True, kernel_regularizer=reg, name="rnn_1")(
            inputs
        )
        x = layers.BatchNormalization(name="bn_1")(x)
        x = layers.Dropout(params["dropout"], name="dropout_1")(x)
        x = cell(params["units_2"], kernel_regularizer=reg, name="rnn_2")(x)
        x = layers.BatchNormalization(name="bn_2")(x)
        x = layers.Dropout(params["dropout_2"], name="dropout_2")(x)
        x = layers.Dense(params["dense_units"], "relu", kernel_regularizer=reg, name="dense_1")(x)
        x = layers.BatchNormalization(name="bn_3")(x)
        x = layers.Dropout(params["dropout_3"], name="dropout_3")(x)
        x = layers.Dense(params["dense_units_2"], "relu", kernel_regularizer=reg, name="dense_2")(x)
        x = layers.Dropout(params["dropout_4"], name="dropout_4")(x)
        outputs = layers.Dense(1, activation="sigmoid", name="p_up")(x)
        return keras.Model(inputs, outputs, name=name)

    return build


BUILDERS: dict[str, Callable[[HyperParams, int, int], keras.Model]] = {
    "volume": _volume,
    "volume-wide": _wide("volume_wide", probability=False),
    "direction": _direction,
    "direction-wide": _wide("direction_wide", probability=True),
    "volume-horizons": _wide("volume_horizons", probability=False, out="log_volume_sums"),
    "direction-horizons": _wide("direction_horizons", probability=True, out="p_up_at"),
    "direction-deep": _deep(layers.LSTM, "direction_deep"),
    "direction-gru": _deep(layers.GRU, "direction_gru"),
}


def build(name: str, params: HyperParams, window: int, n_features: int) -> keras.Model:
    """A compiled model of preset ``name`` (not ``ensemble``: see :func:`combine`)."""
    if name not in BUILDERS:
        raise PresetError(f"preset {name!r} is not built directly")
    model = BUILDERS[name](params, window, n_features)
    optimizer = keras.optimizers.Adam(learning_rate=params["learning_rate"])
    if params.get("quantiles"):
        levels = [float(q) for _ in params["horizons"] for q in params["quantiles"]]
        model.compile(optimizer=optimizer, loss=Pinball(levels))
    elif TARGETS[name] == VOLUME:
        model.compile(optimizer=optimizer, loss=params.get("loss", "mse"), metrics=["mae"])
    else:
        model.compile(
            optimizer=optimizer,
            loss="binary_crossentropy",
            metrics=["accuracy", keras.metrics.AUC(name="auc")],
        )
    return model


@dataclass(frozen=True)
class Member:
    """A fitted network; ``rescale`` (mean, variance) maps the ensemble's scaled input onto
    the member's own scaling when the member was fitted with other scaler statistics."""

    name: str
    model: keras.Model
    rescale: tuple[list[float], list[float]] | None = None


def combine(members: list[Member], window: int, n_features: int) -> keras.Model:
    """One functional model averaging the members' probabilities (built-in ``Average``).

    The members are nested functional models, a member fitted on other scaler statistics
    gets a built-in ``Normalization`` layer with the exact affine map between the two
    scalings: no Lambda layer, no custom Python, so the whole ensemble is one
    ``model.keras`` that loads in safe mode.
    """
    if len(members) < 2:
        raise PresetError("an ensemble needs at least two members")
    inputs = keras.Input((window, n_features), name="window")
    outputs = []
    for i, member in enumerate(members):
        x = inputs
        if member.rescale is not None:
            mean, variance = member.rescale
            x = layers.Normalization(mean=mean, variance=variance, name=f"rescale_{i}")(x)
        # a fresh name per member, so two versions of one preset can sit side by side
        net = keras.Model(member.model.inputs[0], member.model.outputs[0], name=f"member_{i}")
        outputs.append(net(x))
    averaged = layers.Average(name="p_up")(outputs)
    # not compiled: the members are already fitted, and an optimizer would only be saved
    return keras.Model(inputs, averaged, name="ensemble")


def describe(model: keras.Model) -> list[dict[str, Any]]:
    """The layer list for metadata: name, class, output shape and parameter count."""
    rows = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        rows.append(
            {
                "name": layer.name,
                "class": type(layer).__name__,
                "output_shape": list(shape.shape) if shape is not None else None,
                "params": int(layer.count_params()),
            }
        )
    return rows
