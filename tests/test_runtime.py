"""The model runtime: backends equal to Keras, preprocessing and target mapping, refusals,
and models with several outputs."""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.backends import BACKENDS, bucket_for
from inference.publisher import Published
from inference.runtime import ModelRefused, ModelRuntime
from streamer.features import FEATURE_NAMES
from testkit.models import (
    DIRECTION_HORIZONS,
    VOLUME_HORIZONS,
    deep_model,
    horizon_model,
    horizon_preprocess,
    horizon_values,
    preprocess_for,
    random_windows,
    small_model,
    volume_model,
    write_horizon_model,
    write_model,
)
from tests.floats import assert_float32_close
from whalecast.keras_split import Incremental

pytestmark = pytest.mark.tf

BUCKETS = (1, 8, 32)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="module")
def deep_version(registry: Path) -> tuple[str, Any]:
    model = deep_model()
    return write_model(
        registry, "direction", model, preprocess_for(FEATURE_NAMES), graphs=True
    ), model


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_equals_keras_on_real_shaped_input(
    backend: str, registry: Path, deep_version: tuple[str, Any]
) -> None:
    version, model = deep_version
    runtime = ModelRuntime.load(registry, "direction", version, backend, batch_buckets=BUCKETS)
    assert runtime.backend_name == backend
    # sizes below, at, between and past the buckets (70 = 2 x 32 + 6)
    for n in (1, 3, 8, 20, 32, 70):
        windows = random_windows(n, seed=n)
        want = model.predict_on_batch(windows).reshape(n, 1)
        got = runtime.predict(windows)
        assert got.shape == (n, 1)
        assert_float32_close(got, want)


def test_bucket_choice() -> None:
    assert [bucket_for(n, BUCKETS) for n in (1, 2, 8, 9, 32)] == [1, 8, 8, 32, 32]
    with pytest.raises(ValueError):
        bucket_for(33, BUCKETS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_column_slicing_scaler_and_volume_inversion(registry: Path, backend: str) -> None:
    model = volume_model()
    index = FEATURE_NAMES.index("log_volume")
    preprocess = preprocess_for(
        ["log_volume"], target="next_bar_volume", mean=[8.0], scale=[2.0],
        target_transform="log1p", target_scaler={"mean": [7.5], "scale": [1.5]},
    )  # fmt: skip
    version = write_model(registry, "volume", model, preprocess, graphs=backend == "onnx")
    runtime = ModelRuntime.load(
        registry, "volume", version, backend, full_window=30, batch_buckets=BUCKETS
    )
    windows = random_windows(5, rows=30, seed=3) * 2.0 + 8.0  # the daemon may keep more rows
    scaled = (windows[:, -24:, index : index + 1] - 8.0) / 2.0
    raw = model.predict_on_batch(scaled).reshape(-1).astype(np.float64)
    expected = np.maximum(np.expm1(raw * 1.5 + 7.5), 0.0)
    np.testing.assert_allclose(runtime.predict(windows)[:, 0], expected, rtol=1e-4)


def test_columns_follow_the_models_order(registry: Path) -> None:
    features = ["rsi_14", "ret_1", "hour_cos"]
    model = small_model(24, 3, seed=4)
    version = write_model(registry, "order", model, preprocess_for(features, mean=[50.0, 0, 0]))
    runtime = ModelRuntime.load(registry, "order", version, "keras")
    windows = random_windows(4, seed=5)
    columns = [FEATURE_NAMES.index(name) for name in features]
    x = windows[:, :, columns] - np.array([50.0, 0.0, 0.0], dtype=np.float32)
    want = model.predict_on_batch(x).reshape(-1)
    assert_float32_close(runtime.predict(windows)[:, 0], want)
    assert runtime.predict(windows[:0]).shape == (0, 1)
    with pytest.raises(ValueError, match="expected windows"):
        runtime.predict(windows[:, :, :10])
    with pytest.raises(ValueError, match="expected windows"):
        runtime.predict(windows[:, :12, :])


def refused(registry: Path, name: str, version: str, **kwargs: Any) -> str:
    with pytest.raises(ModelRefused) as info:
        ModelRuntime.load(registry, name, version, "keras", **kwargs)
    assert info.value.model == name and info.value.version == version
    return info.value.reason


def test_refuses_other_feature_version(registry: Path) -> None:
    version = write_model(
        registry, "fv", small_model(24, 1), preprocess_for(["ret_1"], feature_version=2)
    )
    assert "feature version 2" in refused(registry, "fv", version)


def test_refuses_unknown_feature(registry: Path) -> None:
    version = write_model(registry, "unknown", small_model(24, 1), preprocess_for(["moon_phase"]))
    assert "moon_phase" in refused(registry, "unknown", version)


def test_refuses_wrong_window(registry: Path) -> None:
    version = write_model(registry, "win", small_model(12, 1), preprocess_for(["ret_1"]))
    assert "input shape (12, 1)" in refused(registry, "win", version)
    long = write_model(registry, "long", small_model(48, 1), preprocess_for(["ret_1"], window=48))
    assert "longer than the 24 rows" in refused(registry, "long", long, full_window=24)


def test_refuses_non_finite_output(registry: Path) -> None:
    model = small_model(24, 1)
    dense = model.layers[-1]
    dense.set_weights([np.full_like(w, np.nan) for w in dense.get_weights()])
    version = write_model(registry, "nan", model, preprocess_for(["ret_1"]))
    assert "non-finite" in refused(registry, "nan", version)


def test_refuses_lambda_layer_without_running_it(registry: Path, tmp_path: Path) -> None:
    import keras

    marker = tmp_path / "code-ran"

    # a lambda is saved as bytecode (a named function only by name); the path is a literal
    # in that bytecode because Keras cannot restore a lambda's default arguments
    code = f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]"
    touch = keras.layers.Lambda(eval(code))
    model = keras.Sequential([keras.Input((24, 1)), touch, keras.layers.LSTM(2)])
    marker.unlink()  # building the model ran it once
    version = write_model(registry, "lambda", model, preprocess_for(["ret_1"]))
    assert "Lambda layer, which runs arbitrary code" in refused(registry, "lambda", version)
    assert not marker.exists()
    # the planted code is real: an unsafe load would have run it
    path = registry / "lambda" / version / "model.keras"
    keras.saving.load_model(path, safe_mode=False, compile=False)
    assert marker.exists()


def test_refuses_pickle_files(registry: Path) -> None:
    def plant(directory: Path) -> None:
        (directory / "scaler.pkl").write_bytes(pickle.dumps({"mean": 0}))

    version = write_model(
        registry, "pkl", small_model(24, 1), preprocess_for(["ret_1"]), extra=plant
    )
    assert "scaler.pkl" in refused(registry, "pkl", version)

    def replace_model(directory: Path) -> None:
        (directory / "model.keras").write_bytes(pickle.dumps(small_model))

    version = write_model(registry, "pkl2", None, preprocess_for(["ret_1"]), extra=replace_model)
    assert "not a Keras zip archive" in refused(registry, "pkl2", version)


def test_refuses_preprocess_with_extra_keys(registry: Path) -> None:
    preprocess = preprocess_for(["ret_1"], loader="joblib")
    version = write_model(registry, "extra", small_model(24, 1), preprocess)
    assert "preprocess.json is not valid" in refused(registry, "extra", version)


def rewrite_config(path: Path, change: Any) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    change(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_refuses_references_to_keras_functions(registry: Path) -> None:
    def unsafe_switch(config: dict[str, Any]) -> None:
        layer = config["config"]["layers"][1]
        layer["config"]["kernel_initializer"] = {
            "module": "keras.config", "class_name": "enable_unsafe_deserialization",
            "config": {}, "registered_name": None,
        }  # fmt: skip

    def plant(directory: Path) -> None:
        rewrite_config(directory / "model.keras", unsafe_switch)

    version = write_model(
        registry, "fn", small_model(24, 1), preprocess_for(["ret_1"]), extra=plant
    )
    assert "enable_unsafe_deserialization" in refused(registry, "fn", version)


def test_refuses_extra_archive_members(registry: Path) -> None:
    def plant(directory: Path) -> None:
        with zipfile.ZipFile(directory / "model.keras", "a") as archive:
            archive.writestr("payload.pkl", pickle.dumps(1))

    version = write_model(
        registry, "zip", small_model(24, 1), preprocess_for(["ret_1"]), extra=plant
    )
    assert "expected exactly" in refused(registry, "zip", version)


def test_refuses_missing_trained_at_and_bad_version(registry: Path) -> None:
    def no_time(directory: Path) -> None:
        (directory / "metadata.json").write_text("{}")

    version = write_model(
        registry, "meta", small_model(24, 1), preprocess_for(["ret_1"]), extra=no_time
    )
    assert "trained_at" in refused(registry, "meta", version)
    assert "not a version name" in refused(registry, "meta", "../../etc")
    assert "no version directory" in refused(registry, "meta", "20261122T060000Z-ffff")


# --- models with several outputs ----------------------------------------------------------


@pytest.fixture(scope="module")
def horizon_versions(registry: Path) -> dict[str, tuple[str, Any]]:
    return {
        kind: write_horizon_model(registry, kind, kind, seed=i, graphs=True)
        for i, kind in enumerate(("volume", "direction"))
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["volume", "direction"])
def test_every_backend_serves_every_output(
    registry: Path, horizon_versions: dict[str, tuple[str, Any]], backend: str, kind: str
) -> None:
    version, model = horizon_versions[kind]
    runtime = ModelRuntime.load(registry, kind, version, backend, batch_buckets=BUCKETS)
    specs = VOLUME_HORIZONS if kind == "volume" else DIRECTION_HORIZONS
    assert runtime.published == [
        Published(s["target"], s["horizon_bars"], s.get("quantile")) for s in specs
    ]
    assert runtime.incremental is not None, runtime.incremental_off
    for n in (1, 9, 70):  # one row, between buckets, past the largest bucket
        windows = random_windows(n, seed=n) + np.float32(5.0)
        got = runtime.predict(windows)
        assert got.shape == (n, len(specs))
        assert_float32_close(got, horizon_values(kind, model, windows))
    # the incremental path: prime on the older rows, then step the newest one
    history = random_windows(12, rows=25, seed=4)
    positions = np.arange(12)
    runtime.prime(history[:, :-1], positions)
    values, stepped = runtime.predict_bar(history[:, 1:], positions)
    assert stepped == 12 and values.shape == (12, len(specs))
    assert_float32_close(values, horizon_values(kind, model, history[:, 1:]))


@pytest.mark.parametrize("backend", ["keras", "onnx"])
def test_refuses_a_model_whose_units_are_not_its_outputs(registry: Path, backend: str) -> None:
    pre = horizon_preprocess("volume")
    two = horizon_model(24, len(pre["features"]), 2, sigmoid=False)
    version = write_model(registry, "units", two, pre, graphs=True)
    with pytest.raises(ModelRefused) as info:
        ModelRuntime.load(registry, "units", version, backend)
    assert "returns 2 values per sample, preprocess.json declares 6 outputs" in info.value.reason


def test_loading_models_traces_no_graph_again(registry: Path) -> None:
    """The warm-up checks call the model eagerly: loading never makes TensorFlow warn that
    a graph was traced again (it used to, at every start, and after a few reloads)."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logging.getLogger("tensorflow").addHandler(handler)
    try:
        for name, model in (("direction", deep_model()), ("volume", volume_model())):
            if name == "volume":
                preprocess = preprocess_for(["log_volume"], target="next_bar_volume")
            else:
                preprocess = preprocess_for(FEATURE_NAMES)
            version = write_model(registry, f"retrace-{name}", model, preprocess)
            for _ in range(2):
                ModelRuntime.load(registry, f"retrace-{name}", version, "tf-function",
                                  batch_buckets=BUCKETS)  # fmt: skip
        # every loaded version builds its own prime/step pair: six in a row, as reloads do
        model = deep_model()
        for n in range(1, 7):
            Incremental(model, 24, len(FEATURE_NAMES)).prime(random_windows(n, rows=23))
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
    assert not [m for m in seen if "retracing" in m], seen
