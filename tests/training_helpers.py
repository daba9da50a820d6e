"""Shared fixtures for the training tests: a small real slice and tiny network settings."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from streamer.features import FEATURE_VERSION
from training.history import SeriesHistory, from_csv
from whalecast.artifact import load_preprocess
from whalecast.settings import Settings, TrainingSettings

DATA = Path(__file__).resolve().parents[1] / "streamer" / "data"
TINY = {"epochs": 2, "batch_size": 256, "patience": 0}
TINY_NET = {
    "volume": {"units": 8},
    "direction": {"units": 8},
    "direction-deep": {"units": 8, "units_2": 4, "dense_units": 4, "dense_units_2": 4,
                       "lr_patience": 1},
    "direction-gru": {"units": 8, "units_2": 4, "dense_units": 4, "dense_units_2": 4},
}  # fmt: skip


@pytest.fixture(scope="module", name="histories")
def histories_fixture() -> list[SeriesHistory]:
    full = from_csv(
        [DATA / "binance_BTC-USDT_1h.csv.gz", DATA / "binance_ETH-USDT_1h.csv.gz"],
        [DATA / "whalealert_BTC_exchange_flows_1h.csv.gz"],
    )
    return [SeriesHistory(h.series, h.bars.iloc[-1500:].reset_index(drop=True), h.source)
            for h in full]  # fmt: skip


@pytest.fixture(scope="module", name="settings")
def settings_fixture() -> Settings:
    training = TrainingSettings(
        test_days=10, validation_fraction=0.2, train_days=30, bootstrap_samples=50,
        baseline_fallback=False,  # on in tests.test_training_baseline
        presets={name: {**TINY, **net} for name, net in TINY_NET.items()},  # type: ignore[misc]
    )  # fmt: skip
    return Settings(training=training)


def check_artifact(directory: Path, target: str, n_features: int) -> None:
    for name in ("model.keras", "preprocess.json", "metadata.json", "report.json"):
        assert (directory / name).is_file(), name
    pre = load_preprocess(directory)
    assert pre.feature_version == FEATURE_VERSION and pre.window == 24
    assert pre.target == target and len(pre.features) == n_features
    model = keras.saving.load_model(directory / "model.keras", safe_mode=True)
    assert tuple(model.input_shape) == (None, 24, n_features)
    x = np.random.default_rng(0).normal(size=(5, 24, n_features)).astype("float32")
    out = model.predict(x, verbose=0)
    assert out.shape == (5, 1) and np.isfinite(out).all()
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["parameter_count"] == model.count_params()
    assert meta["trained_at"].endswith("Z") and meta["seed"] == 42
    assert meta["libraries"]["keras"] == keras.__version__
    assert "revision" in meta["code"] and meta["data"]["cuts"]["test_ms"]
    report = json.loads((directory / "report.json").read_text())
    pooled = report["test"]["pooled"]
    assert {"model", "ridge" if target == "next_bar_volume" else "logistic"} <= set(
        pooled["models"]
    )
    for plot in report["plots"]:
        assert (directory / plot).stat().st_size > 1000
