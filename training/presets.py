"""Model presets from the seed documents, chosen by name, every hyper-parameter overridable.

A preset is a table of defaults plus a builder that turns the resolved table into a
compiled Keras model with a fixed input ``(None, window, n_features)``. Only built-in
layers are used, so the daemon loads every artifact with ``safe_mode=True`` and may
export it to ONNX. Parameter layering, lowest first: the defaults below, then
``training.presets.<name>`` in config, then ``training.epochs`` / ``batch_size`` /
``learning_rate`` / ``window_bars`` / ``look_back_bars``, then a tuned-parameter file,
then command-line flags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras
from keras import layers, regularizers

from streamer.features import FEATURE_NAMES

HyperParams = dict[str, Any]

#: Keys every preset has (fitting, not architecture).
COMMON: HyperParams = {
    "epochs": 50,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "window": None,  # null: features.window
    "patience": 10,  # early stopping on val_loss (0: off), best weights restored
    "lr_patience": 0,  # ReduceLROnPlateau on val_loss (0: off)
    "lr_factor": 0.5,
    "features": list(FEATURE_NAMES),
}

DEEP: HyperParams = {
    **COMMON,
    "epochs": 150,
    "patience": 20,
    "lr_patience": 10,
    "units": 128,
    "units_2": 64,
    "dense_units": 32,
    "dense_units_2": 16,
    "dropout": 0.3,
    "dropout_2": 0.25,
    "dropout_3": 0.2,
    "dropout_4": 0.1,
    "l2": 1e-4,
}

DEFAULTS: dict[str, HyperParams] = {
    # seeds 000-002: LSTM(50, relu) -> Dense(1) on log volume alone, Adam, MSE, 100 epochs, batch 32
    "volume": {
        **COMMON,
        "epochs": 100,
        "patience": 0,
        "units": 50,
        "activation": "relu",
        "features": ["log_volume"],
    },
    # seed 003: LSTM -> Dropout -> Dense(1, sigmoid) on price and whale features, Adam, BCE
    "direction": {**COMMON, "units": 64, "dropout": 0.2},
    # seed 004: two stacked LSTMs with BatchNorm, Dropout and L2, then a dense head
    "direction-deep": DEEP,
    # seed 004's "planned" lighter variant: the same network with GRU cells
    "direction-gru": DEEP,
    # seed 004's "ensemble both": the members' probabilities averaged in one model
    "ensemble": {
        **COMMON,
        "members": ["direction", "direction-deep", "direction-gru"],
    },
}

TARGETS = {
    "volume": "next_bar_volume",
    "direction": "p_up_next_bar",
    "direction-deep": "p_up_next_bar",
    "direction-gru": "p_up_next_bar",
    "ensemble": "p_up_next_bar",
}


class PresetError(ValueError):
    """An unknown preset or hyper-parameter, or a value of the wrong type."""


def preset_names() -> list[str]:
    return list(DEFAULTS)


def resolve(name: str, *layers_: Mapping[str, Any] | None) -> HyperParams:
    """The preset's defaults with each override layer applied in order (``None`` skipped)."""
    if name not in DEFAULTS:
        raise PresetError(f"unknown preset {name!r}; choose one of {', '.join(DEFAULTS)}")
    params = {key: (list(v) if isinstance(v, list) else v) for key, v in DEFAULTS[name].items()}
    for layer in layers_:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if key not in params:
                known = ", ".join(sorted(params))
                raise PresetError(
                    f"preset {name!r} has no hyper-parameter {key!r} (known: {known})"
                )
            params[key] = _coerce(name, key, params[key], value)
    return params


def _coerce(preset: str, key: str, default: Any, value: Any) -> Any:
    if default is None or isinstance(value, type(default)):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise PresetError(f"preset {preset!r}: {key} must be {type(default).__name__}, got {value!r}")


# --- builders: each returns an uncompiled model on Input(window, n_features) -------------------


def _volume(params: HyperParams, window: int, n_features: int) -> keras.Model:
    inputs = keras.Input((window, n_features), name="window")
    x = layers.LSTM(params["units"], activation=params["activation"], name="lstm")(inputs)
    outputs = layers.Dense(1, name="log_volume_next")(x)
    return keras.Model(inputs, outputs, name="volume")


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
    "direction": _direction,
    "direction-deep": _deep(layers.LSTM, "direction_deep"),
    "direction-gru": _deep(layers.GRU, "direction_gru"),
}


def build(name: str, params: HyperParams, window: int, n_features: int) -> keras.Model:
    """A compiled model of preset ``name`` (not ``ensemble``: see :func:`combine`)."""
    if name not in BUILDERS:
        raise PresetError(f"preset {name!r} is not built directly")
    model = BUILDERS[name](params, window, n_features)
    optimizer = keras.optimizers.Adam(learning_rate=params["learning_rate"])
    if TARGETS[name] == "next_bar_volume":
        model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    else:
        model.compile(
            optimizer=optimizer,
            loss="binary_crossentropy",
            metrics=["accuracy", keras.metrics.AUC(name="auc")],
        )
    return model


@dataclass(frozen=True)
class Member:
    name: str
    model: keras.Model


def combine(members: list[Member], window: int, n_features: int) -> keras.Model:
    """One functional model averaging the members' probabilities (built-in ``Average``).

    The members are nested functional models: no Lambda layer, no custom Python, so the
    whole ensemble is one ``model.keras`` that loads in safe mode.
    """
    if len(members) < 2:
        raise PresetError("an ensemble needs at least two members")
    inputs = keras.Input((window, n_features), name="window")
    outputs = [m.model(inputs) for m in members]
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
