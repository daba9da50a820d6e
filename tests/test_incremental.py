"""Incremental passes: prime + step equals the full window, and only exact states are reused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from inference.incremental import StateCache
from inference.runtime import ModelRuntime
from streamer.features import FEATURE_NAMES
from testkit.models import WINDOW, preprocess_for, random_windows, write_model
from tests.floats import assert_float32_close
from training.params import DEFAULTS
from training.presets import BUILDERS, Member, combine
from whalecast.keras_split import Incremental, NotIncremental

pytestmark = pytest.mark.tf

F = len(FEATURE_NAMES)


def preset(name: str, n_features: int = F, seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    model = BUILDERS[name](DEFAULTS[name], WINDOW, n_features)
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # trained-looking batch norm: not the identity of a fresh one
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma * 1.3, beta + 0.1, rng.normal(0, 0.3, mean.shape).astype("f4"),
                               (0.5 + rng.random(var.shape)).astype("f4")])  # fmt: skip
    return model


def ensemble() -> Any:
    rescale = ([0.1] * F, [2.0] * F)
    members = [Member("a", preset("direction"), rescale), Member("b", preset("direction-deep"))]
    return combine(members, WINDOW, F)


MODELS = {
    "volume": lambda: (preset("volume", 1), 1),
    "direction": lambda: (preset("direction"), F),
    "direction-deep": lambda: (preset("direction-deep"), F),
    "direction-gru": lambda: (preset("direction-gru"), F),
    "ensemble": lambda: (ensemble(), F),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_prime_then_step_equals_the_full_window(name: str) -> None:
    model, features = MODELS[name]()
    split = Incremental(model, WINDOW, features)
    rng = np.random.default_rng(1)
    for n in (1, 5, 300):
        x = rng.standard_normal((n, WINDOW, features)).astype(np.float32)
        want = np.asarray(model.predict_on_batch(x)).reshape(n, -1)
        got = split.step(x[:, -1:], split.prime(x[:, :-1]))
        assert_float32_close(got, want)


def test_a_sequential_model_splits_too() -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((WINDOW, 3)), keras.layers.Dense(5),
                              keras.layers.SimpleRNN(4, return_sequences=True),
                              keras.layers.GRU(3), keras.layers.Dense(1)])  # fmt: skip
    x = np.random.default_rng(2).standard_normal((9, WINDOW, 3)).astype(np.float32)
    split = Incremental(model, WINDOW, 3)
    assert_float32_close(
        split.step(x[:, -1:], split.prime(x[:, :-1])),
        np.asarray(model.predict_on_batch(x)).reshape(9, -1),
    )


def _functional(*middle: Any, features: int = 3) -> Any:
    inputs = keras.Input((WINDOW, features))
    x = inputs
    for layer in middle:
        x = layer(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x))


@pytest.mark.parametrize(
    ("layers", "reason"),
    [
        ((keras.layers.Conv1D(4, 3), keras.layers.LSTM(4)), "mixes time steps"),
        ((keras.layers.Bidirectional(keras.layers.LSTM(4)),), "mixes time steps"),
        ((keras.layers.LSTM(4, go_backwards=True),), "backwards"),
        ((keras.layers.LSTM(4, return_sequences=True), keras.layers.Flatten()), "mixes time steps"),
        ((keras.layers.BatchNormalization(axis=1), keras.layers.LSTM(4)), "more than the features"),
        ((keras.layers.Flatten(),), "mixes time steps"),
    ],
)
def test_models_whose_time_steps_mix_elsewhere_are_refused_with_the_reason(
    layers: tuple[Any, ...], reason: str
) -> None:
    with pytest.raises(NotIncremental, match=reason):
        Incremental(_functional(*layers), WINDOW, 3)


def test_a_window_of_one_row_or_no_recurrence_is_not_split() -> None:
    with pytest.raises(NotIncremental, match="one row"):
        Incremental(_functional(keras.layers.LSTM(2)), 1, 3)
    inputs = keras.Input((WINDOW, 3))
    dense = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(2)(inputs)[:, -1]))
    with pytest.raises(NotIncremental):
        Incremental(dense, WINDOW, 3)


def test_the_cache_hands_out_a_state_only_for_the_exact_rows() -> None:
    cache = StateCache()
    rows = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    state = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    positions = np.array([5, 1])
    assert not cache.match(positions, rows).any()  # nothing primed yet
    cache.put(positions, rows, [state])
    assert cache.match(positions, rows).tolist() == [True, True]
    assert cache.match(positions[::-1], rows).tolist() == [False, False]  # rows of the other one
    changed = rows.copy()
    changed[1, 0, 1] = np.nextafter(changed[1, 0, 1], np.float32(1e9))  # one ulp, one value
    assert cache.match(positions, changed).tolist() == [True, False]
    assert cache.match(np.array([0, 9]), rows).tolist() == [False, False]  # never primed
    np.testing.assert_array_equal(cache.states(np.array([1, 5]))[0], state[::-1])
    cache.put(np.array([40]), rows[:1], [state[:1]])  # grows, keeps what it held
    assert cache.match(np.array([5, 40]), rows[[0, 0]]).tolist() == [True, True]
    nan_rows = rows.copy()
    nan_rows[:] = np.nan
    cache.put(positions, nan_rows, [state])
    assert not cache.match(positions, nan_rows).any()  # NaN never equals: the full pass runs


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    root = tmp_path_factory.mktemp("registry")
    deep = write_model(
        root, "direction", preset("direction-deep"), preprocess_for(FEATURE_NAMES), graphs=True
    )
    conv = _functional(keras.layers.Conv1D(2, 3), keras.layers.LSTM(2), features=F)
    other = write_model(root, "conv", conv, preprocess_for(FEATURE_NAMES), graphs=True)
    return root, deep, other


@pytest.mark.parametrize("backend", ["tf-function", "onnx"])
def test_predict_bar_steps_primed_series_and_runs_the_rest_in_full(
    registry: tuple[Path, str, str], backend: str
) -> None:
    root, version, _ = registry
    runtime = ModelRuntime.load(root, "direction", version, backend)
    assert runtime.incremental is not None and runtime.describe()["incremental"]
    history = random_windows(40, rows=WINDOW + 1, seed=3)
    before, now = history[:, :-1], history[:, 1:]  # one bar later: each window moved a row
    positions = np.arange(40)
    values, stepped = runtime.predict_bar(before, positions)
    assert stepped == 0  # nothing primed: all full windows
    assert_float32_close(values, runtime.predict(before))

    runtime.prime(before, positions)
    now[3, 5, 0] += 1.0  # series 3's older rows changed since the priming (a reload, say)
    values, stepped = runtime.predict_bar(now, positions)
    assert stepped == 39
    assert_float32_close(values, runtime.predict(now))

    shuffled = positions[::-1].copy()  # the rows belong to other series now: no state fits
    assert runtime.predict_bar(now, shuffled)[1] == 0


@pytest.mark.parametrize("backend", ["keras", "onnx"])
def test_a_model_that_does_not_split_is_served_by_full_passes(
    registry: tuple[Path, str, str], backend: str
) -> None:
    root, deep, conv = registry
    runtime = ModelRuntime.load(root, "conv", conv, backend)
    assert runtime.incremental is None
    assert "mixes time steps" in runtime.incremental_off
    windows = random_windows(6, seed=4)
    runtime.prime(windows, np.arange(6))  # a no-op
    values, stepped = runtime.predict_bar(windows, np.arange(6))
    assert stepped == 0
    assert_float32_close(values, runtime.predict(windows))
    off = ModelRuntime.load(root, "direction", deep, backend, incremental=False)
    assert off.incremental is None and off.describe()["incremental_off"] == "disabled"
