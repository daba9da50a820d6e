"""The artifact's ONNX graphs: exported by the trainer or `whalecast export-onnx`, served by
the onnx backend without TensorFlow, checked against the Keras output stored with them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.backends import ONNX_MAX_CHUNK
from inference.runtime import ModelRefused, ModelRuntime
from streamer.features import FEATURE_NAMES
from testkit.models import WINDOW, preprocess_for, random_windows, small_model, write_model
from tests.floats import assert_float32_close
from whalecast.artifact import version_dir
from whalecast.graphs import FULL_GRAPH, GRAPHS_FILE, STEP_GRAPH, describe

pytestmark = pytest.mark.tf

FEATURES = ["ret_1", "rsi_14", "hour_cos"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="module")
def exported(registry: Path) -> tuple[str, Any]:
    model = small_model(WINDOW, len(FEATURES), seed=3)
    return write_model(registry, "small", model, preprocess_for(FEATURES), graphs=True), model


def refusal(registry: Path, name: str, version: str) -> str:
    with pytest.raises(ModelRefused) as info:
        ModelRuntime.load(registry, name, version, "onnx")
    return info.value.reason


SERVE = """
import json, sys
import numpy as np
from pathlib import Path
from inference.runtime import ModelRuntime
runtime = ModelRuntime.load(Path(sys.argv[1]), sys.argv[2], sys.argv[3], "onnx")
windows = np.load(sys.argv[4])
positions = np.arange(len(windows))
runtime.prime(windows[:, :-1], positions)
values, stepped = runtime.predict_bar(windows[:, 1:], positions)
heavy = [m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules]
print(json.dumps({"values": values.tolist(), "stepped": stepped, "heavy": heavy,
                  "incremental": runtime.describe()["incremental"]}))
"""


def test_the_onnx_backend_serves_steps_without_importing_tensorflow(
    registry: Path, exported: tuple[str, Any], tmp_path: Path
) -> None:
    version, model = exported
    history = random_windows(9, rows=WINDOW + 1, seed=11)
    np.save(tmp_path / "windows.npy", history)
    out = subprocess.run(
        [sys.executable, "-c", SERVE, str(registry), "small", version, str(tmp_path / "windows.npy")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    served = json.loads(out.stdout.strip().splitlines()[-1])
    assert served["heavy"] == [], f"the onnx backend imported {served['heavy']}"
    assert served["incremental"] and served["stepped"] == 9
    columns = [FEATURE_NAMES.index(name) for name in FEATURES]
    want = model.predict_on_batch(history[:, 1:][:, :, columns]).reshape(-1, 1)
    assert_float32_close(np.asarray(served["values"]), want)


def test_batches_larger_than_a_chunk_prime_and_step_like_keras(
    registry: Path, exported: tuple[str, Any]
) -> None:
    version, model = exported
    runtime = ModelRuntime.load(registry, "small", version, "onnx")
    n = 2 * ONNX_MAX_CHUNK + 7
    history = random_windows(n, rows=WINDOW + 1, seed=4)
    positions = np.arange(n)
    runtime.prime(history[:, :-1], positions)
    values, stepped = runtime.predict_bar(history[:, 1:], positions)
    assert stepped == n
    columns = [FEATURE_NAMES.index(name) for name in FEATURES]
    want = model.predict_on_batch(history[:, 1:][:, :, columns]).reshape(-1, 1)
    assert_float32_close(values, want)
    assert_float32_close(runtime.predict(history[:, 1:]), want)


@pytest.mark.slow  # the CLI in a process of its own, importing TensorFlow and the converter
def test_export_onnx_adds_the_graphs_to_a_version_trained_before_them(
    registry: Path,
) -> None:
    model = small_model(WINDOW, len(FEATURES), seed=5)
    version = write_model(registry, "older", model, preprocess_for(FEATURES))
    assert "whalecast export-onnx" in refusal(registry, "older", version)
    directory = version_dir(registry, "older", version)
    out = subprocess.run(
        [sys.executable, "-m", "whalecast", "export-onnx", str(directory)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "full, prime, step" in out.stdout
    runtime = ModelRuntime.load(registry, "older", version, "onnx")
    assert runtime.incremental is not None
    windows = random_windows(4, seed=2)
    keras_runtime = ModelRuntime.load(registry, "older", version, "keras")
    assert_float32_close(runtime.predict(windows), keras_runtime.predict(windows))
    failed = subprocess.run(
        [sys.executable, "-m", "whalecast", "export-onnx", str(directory.parent / "nothing")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert failed.returncode == 1 and "nothing" in failed.stderr


def _copy(registry: Path, version: str, name: str) -> Path:
    """The exported version copied under another model name (to tamper with)."""
    source = version_dir(registry, "small", version)
    target = version_dir(registry, name, version)
    target.mkdir(parents=True)
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def test_a_graph_that_does_not_match_its_checksum_is_refused(
    registry: Path, exported: tuple[str, Any]
) -> None:
    version, _ = exported
    target = _copy(registry, version, "tampered")
    data = bytearray((target / FULL_GRAPH).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (target / FULL_GRAPH).write_bytes(bytes(data))
    assert "checksum" in refusal(registry, "tampered", version)


def test_graphs_that_differ_from_the_stored_keras_output_are_refused(
    registry: Path, exported: tuple[str, Any]
) -> None:
    version, _ = exported
    target = _copy(registry, version, "drifted")
    manifest = json.loads((target / GRAPHS_FILE).read_text())
    manifest["check"][1]["keras"][3] += 1e-3
    (target / GRAPHS_FILE).write_text(json.dumps(manifest))
    assert "differs from Keras" in refusal(registry, "drifted", version)


def test_a_step_graph_that_differs_from_the_full_graph_turns_steps_off(
    registry: Path, exported: tuple[str, Any]
) -> None:
    version, _ = exported
    other = small_model(WINDOW, len(FEATURES), seed=8)  # same shapes, other weights
    other_version = write_model(registry, "other", other, preprocess_for(FEATURES), graphs=True)
    target = _copy(registry, version, "mixed")
    step = (version_dir(registry, "other", other_version) / STEP_GRAPH).read_bytes()
    (target / STEP_GRAPH).write_bytes(step)
    manifest = json.loads((target / GRAPHS_FILE).read_text())
    manifest["step"] = describe(STEP_GRAPH, step).model_dump()
    (target / GRAPHS_FILE).write_text(json.dumps(manifest))
    runtime = ModelRuntime.load(registry, "mixed", version, "onnx")
    assert runtime.incremental is None
    assert "steps differ from the full pass" in runtime.incremental_off
