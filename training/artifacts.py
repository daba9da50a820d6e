"""Writing and reading model artifacts the way the daemon will read them.

Predictions for evaluation come from the artifact on disk, loaded in Keras safe mode with
its ``preprocess.json``: the numbers in a report are those of the model as it will serve.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import keras
import numpy as np

from streamer.features import FEATURE_VERSION
from training.dataset import Samples, SeriesData, feature_index, iso, windows
from training.presets import Member
from whalecast.artifact import (
    METADATA_FILE,
    MODEL_FILE,
    PREPROCESS_FILE,
    ArtifactError,
    Preprocess,
    Scaler,
    load_preprocess,
    read_current,
    read_json,
    version_dir,
    write_json,
)
from whalecast.logs import get_logger
from whalecast.targets import DIRECTION

log = get_logger(__name__)
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "pandas", "scikit-learn", "ccxt")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Loaded:
    directory: Path
    model: keras.Model
    preprocess: Preprocess


def save(directory: Path, model: keras.Model, preprocess: Preprocess) -> None:
    model.save(directory / MODEL_FILE)
    write_json(directory / PREPROCESS_FILE, preprocess.model_dump(mode="json"))


def load(directory: Path) -> Loaded:
    """The model in safe mode (no custom Python) and its preprocess description."""
    preprocess = load_preprocess(directory)
    try:
        model = keras.saving.load_model(directory / MODEL_FILE, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises many types for a bad file
        raise ArtifactError(f"{directory / MODEL_FILE} cannot be loaded: {e}") from e
    return Loaded(directory, model, preprocess)


def serving(registry: Path, model: str) -> Loaded | None:
    """The version in service, or ``None`` when there is none."""
    version = read_current(registry, model)
    if version is None:
        return None
    return load(version_dir(registry, model, version))


def comparable(loaded: Loaded, target: str) -> str | None:
    """Why the artifact cannot be scored on this run's samples, or ``None`` when it can."""
    pre = loaded.preprocess
    if pre.feature_version != FEATURE_VERSION:
        return f"feature version {pre.feature_version}, this run builds {FEATURE_VERSION}"
    if pre.target != target:
        return f"target {pre.target}, this run predicts {target}"
    try:
        feature_index(pre.features)
    except ValueError as e:
        return str(e)
    return None


def predict(
    loaded: Loaded, data: Sequence[SeriesData], samples: Samples, batch_size: int = 1024
) -> np.ndarray:
    """Predictions in the target's training space: P(up), or log1p(volume)."""
    return predict_outputs(loaded, data, samples, batch_size).reshape(-1)


def predict_outputs(
    loaded: Loaded, data: Sequence[SeriesData], samples: Samples, batch_size: int = 1024
) -> np.ndarray:
    """``(n, outputs)`` predictions, each output in its target's training space (P(up), or
    log1p volume), the target scaler undone per output."""
    pre = loaded.preprocess
    x = windows(data, samples, feature_index(pre.features), pre.window, pre.scaler)
    raw = np.asarray(loaded.model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)
    raw = raw.reshape(len(x), -1)
    if pre.target_scaler is not None:
        raw = raw * np.asarray(pre.target_scaler.scale) + np.asarray(pre.target_scaler.mean)
    if not np.isfinite(raw).all():
        raise ArtifactError(f"{loaded.directory}: the model returns non-finite values")
    return raw


def serving_overlap(serving: Loaded, test_ms: int) -> dict[str, Any]:
    """Whether the version in service was fitted or early-stopped on part of this test period.

    If it was, the comparison favours it; the report says so rather than hiding it.
    """
    meta = read_json(serving.directory / METADATA_FILE)
    its_test = meta.get("data", {}).get("cuts", {}).get("test_ms")
    saw = its_test is None or its_test > iso(test_ms)  # ISO strings sort like times
    if saw:
        log.warning("serving_model_saw_test_period", version=serving.directory.name)
    return {"version": serving.directory.name, "its_test_start": its_test, "saw_test_period": saw}


def registry_member(registry: Path, ref: str, scaler: Scaler, params: dict[str, Any]) -> Member:
    """A fitted version (``<model>/<version>``) as a member of an ensemble scaled by ``scaler``.

    The member expects ``(raw - m_i) / s_i``; the ensemble's input is ``(raw - m) / s``. A
    built-in Normalization with mean ``(m_i - m) / s`` and std ``s_i / s`` maps one onto the
    other exactly, unless the ensemble's scaler switched off a feature the member uses.
    """
    model_name, _, version = ref.partition("/")
    loaded = load(version_dir(registry, model_name, version))
    pre = loaded.preprocess
    if pre.target != DIRECTION or pre.features != list(params["features"]):
        raise ArtifactError(f"{ref} does not predict {DIRECTION} from the ensemble's features")
    if pre.window != params["window"]:
        raise ArtifactError(f"{ref} has window {pre.window}, the ensemble {params['window']}")
    m, s = np.asarray(scaler.mean), np.asarray(scaler.scale)
    m_i, s_i = np.asarray(pre.scaler.mean), np.asarray(pre.scaler.scale)
    mean, std = (m_i - m) / s, s_i / s
    lost = [f for f, x in zip(pre.features, std, strict=True) if x < 1e-6]
    if lost:
        raise ArtifactError(
            f"{ref} reads {', '.join(lost)}, which are constant on the ensemble's training rows; "
            "fit the ensemble on the rows the member was fitted on (training.train_days)"
        )
    if np.allclose(mean, 0.0, atol=1e-9) and np.allclose(std, 1.0, rtol=1e-9):
        return Member(ref, loaded.model)
    return Member(ref, loaded.model, ([float(x) for x in mean], [float(x) ** 2 for x in std]))


# --- metadata -------------------------------------------------------------------------------


def code_revision() -> dict[str, Any]:
    """``git rev-parse HEAD`` of the source tree, and whether it had uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT, capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}
    if rev.returncode != 0:
        return {"revision": None, "dirty": None}
    return {"revision": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
