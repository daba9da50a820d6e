"""Preset hyper-parameters: the seeds' defaults and how overrides are layered on them.

Kept apart from the Keras builders (:mod:`training.presets`) so that resolving and checking
a job's parameters (and ``whalecast train --list-presets``) never imports TensorFlow.
Layering, lowest first: the defaults below, then ``training.presets.<name>`` in config,
then ``training.epochs`` / ``batch_size`` / ``learning_rate`` / ``window_bars`` /
``look_back_bars``, then a tuned-parameter file, then command-line flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamer.features import SEED_FEATURES
from whalecast.targets import DIRECTION, DIRECTION_AT, VOLUME, VOLUME_SUM, Target

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
    "features": list(SEED_FEATURES),
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
        # instead of fitting members, average these registry versions ("<model>/<version>")
        "member_versions": [],
    },
}

#: ``volume-wide``'s inputs: volume at three horizons (HAR-style), trading activity and the
#: daily / weekly calendar; no whale columns (constant before Nov 2024, see the results).
VOLUME_WIDE_FEATURES = [
    "log_volume", "log_volume_mean_6", "log_volume_mean_24", "volume_z_24", "volume_ratio_6_24",
    "abs_ret_1", "range_rel", "vol_6", "vol_24", "atr_14_rel",
    "hour_sin", "hour_cos", "hour_sin_2", "hour_cos_2", "hour_sin_3", "hour_cos_3",
    "hour_sin_4", "hour_cos_4", "dow_sin", "dow_cos",
]  # fmt: skip

DEFAULTS["volume-wide"] = {
    # wide and deep: a linear map of the whole window (started at the ridge solution over
    # the same window) plus an LSTM that learns what is left, fitted on the metric (MAE)
    **COMMON,
    "epochs": 20,
    "patience": 4,
    "batch_size": 256,
    "learning_rate": 1e-4,  # 1e-3 left the ridge start within an epoch and did worse on test
    "units": 32,
    "dense_units": 16,
    "loss": "mae",
    "init_linear": True,
    "features": VOLUME_WIDE_FEATURES,
}

#: ``direction-wide``'s inputs: the seed's price, volume, oscillator and calendar columns
#: (the regime ones among them: volatility 6/24, ATR, volume z-score and ratio) plus the
#: appended volume memory and hour harmonics; no whale columns.
DIRECTION_WIDE_FEATURES = [
    name for name in SEED_FEATURES if not name.startswith(("whale_", "stable_"))
] + ["abs_ret_1", "log_volume_mean_6", "log_volume_mean_24", "hour_sin_2", "hour_cos_2",
     "hour_sin_3", "hour_cos_3", "hour_sin_4", "hour_cos_4"]  # fmt: skip

DEFAULTS["direction-wide"] = {
    # the same wide and deep shape on P(up): started at the logistic fit over the window
    **COMMON,
    "epochs": 20,
    "patience": 4,
    "batch_size": 256,
    "learning_rate": 1e-4,
    "units": 32,
    "dense_units": 16,
    "init_linear": True,
    "features": DIRECTION_WIDE_FEATURES,
}

DEFAULTS["volume-horizons"] = {
    # volume-wide with one output per horizon and quantile (p50 and p90 of the volume summed
    # over the next 1, 6 and 24 bars), fitted on the pinball loss; started at one ridge per
    # horizon over the window, shifted by the quantiles of its training residuals
    **DEFAULTS["volume-wide"],
    "loss": "pinball",
    "horizons": [1, 6, 24],
    "quantiles": [0.5, 0.9],
}

DEFAULTS["direction-horizons"] = {
    # direction-wide's shape with P(up) at 1 and 6 bars; the wide part starts untrained (a
    # logistic fit over the 720-input window per horizon costs minutes each)
    **DEFAULTS["direction-wide"],
    "init_linear": False,
    "learning_rate": 1e-3,
    "horizons": [1, 6],
    "quantiles": [],
}

TARGETS: dict[str, Target] = {
    "volume": VOLUME,
    "volume-wide": VOLUME,
    "direction": DIRECTION,
    "direction-wide": DIRECTION,
    "direction-deep": DIRECTION,
    "direction-gru": DIRECTION,
    "ensemble": DIRECTION,
    "volume-horizons": VOLUME_SUM,
    "direction-horizons": DIRECTION_AT,
}


#: Input groups an ablation switches off one at a time (``whalecast train --without``).
INPUT_GROUPS: dict[str, tuple[str, ...]] = {
    "whale": tuple(n for n in SEED_FEATURES if n.startswith(("whale_", "stable_"))),
    "calendar": ("hour_sin", "hour_cos", "hour_sin_2", "hour_cos_2", "hour_sin_3", "hour_cos_3",
                 "hour_sin_4", "hour_cos_4", "dow_sin", "dow_cos"),
    "memory": ("log_volume_mean_6", "log_volume_mean_24", "volume_z_24", "volume_ratio_6_24"),
    "activity": ("abs_ret_1", "range_rel", "vol_6", "vol_24", "atr_14_rel"),
    "regime": ("vol_6", "vol_24", "atr_14_rel", "volume_z_24", "volume_ratio_6_24"),
}  # fmt: skip


def without(features: list[str], groups: list[str]) -> list[str]:
    """``features`` minus every input of ``groups``, order kept."""
    dropped = {name for group in groups for name in INPUT_GROUPS[group]}
    kept = [name for name in features if name not in dropped]
    if not kept:
        raise PresetError(f"--without {' '.join(groups)} leaves no input")
    return kept


def groups_left_out(preset: str, features: list[str]) -> list[str]:
    """The input groups of ``preset``'s default features that ``features`` leaves out."""
    default = set(DEFAULTS[preset]["features"])
    missing = default - set(features)
    return [g for g, names in INPUT_GROUPS.items() if (default & set(names)) <= missing and (
        default & set(names))]  # fmt: skip


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
