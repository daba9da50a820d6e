"""Multi-horizon presets end to end on the shipped slice: one forward pass, every output
scored per horizon beside its baselines, an artifact that follows the outputs contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from inference.runtime import ModelRuntime
from streamer.features import FEATURE_NAMES
from tests.floats import assert_float32_close
from tests.test_training_cli import ROOT, SLICE, last_json
from tests.training_helpers import histories_fixture, settings_fixture  # noqa: F401 - fixtures
from training import artifacts, walkforward
from training.dataset import TEST, TRAIN, windows
from training.history import SeriesHistory
from training.horizon_summary import tables, text
from training.jobs import Job, make_job
from training.summary import walk_forward_table
from training.train import Outcome, load_data, run
from whalecast.artifact import Scaler, load_preprocess
from whalecast.settings import Settings
from whalecast.targets import DIRECTION_AT, VOLUME_SUM

pytestmark = [pytest.mark.tf, pytest.mark.training]

TINY = {"units": 4, "dense_units": 4, "epochs": 2, "patience": 0}


def trained(settings: Settings, histories: list[SeriesHistory], preset: str, registry: Path,
            **extra: object) -> tuple[Job, Outcome]:  # fmt: skip
    job = make_job(settings, preset, registry=registry, extra={**TINY, **extra}, plots=False,
                   publish=False)  # fmt: skip
    return job, run(settings, job, histories)


def test_volume_horizons_writes_six_quantile_outputs_scored_per_horizon(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory]
) -> None:
    _, outcome = trained(settings, histories, "volume-horizons", tmp_path)
    pre = load_preprocess(outcome.directory)
    assert pre.target == VOLUME_SUM and pre.target_transform == "log1p"
    assert [(o.horizon_bars, o.quantile) for o in pre.output_specs()] == [
        (1, 0.5), (1, 0.9), (6, 0.5), (6, 0.9), (24, 0.5), (24, 0.9)
    ]  # fmt: skip
    assert pre.target_scaler is not None and len(pre.target_scaler.mean) == 6
    model = keras.saving.load_model(outcome.directory / "model.keras", safe_mode=True,
                                    compile=False)  # fmt: skip
    assert model.output_shape == (None, 6)
    report = json.loads((outcome.directory / "report.json").read_text())
    assert [s["horizon_bars"] for s in report["horizons"]] == [1, 6, 24]
    for scored in report["horizons"]:
        names = set(scored["pooled"]["models"])
        assert names == {"model", "persistence", "seasonal_profile", "ridge"}
        cov = scored["pooled"]["models"]["model"]["coverage_90"]
        assert 0.0 <= cov["low"] <= cov["value"] <= cov["high"] <= 1.0
        assert "coverage_90" not in scored["pooled"]["paired"]["ridge"]
        assert len(scored["series"]) == len(histories)
    assert len(report["horizon_verdicts"]) == 3
    assert report["promotion"]["promote"] == all(v["passes"] for v in report["horizon_verdicts"])
    # the ONNX graphs exist and carry all six outputs
    manifest = json.loads((outcome.directory / "graphs.json").read_text())
    check = manifest["check"][0]
    assert len(check["keras"]) == 6 * check["rows"]
    meta = json.loads((outcome.directory / "metadata.json").read_text())
    rendered = tables([(report, meta)])
    assert "| 24 | **model** |" in rendered and "coverage" in rendered
    assert "24 bars" in text(report, outcome.model, outcome.version)


def test_the_ridge_start_is_a_calibrated_quantile_ridge(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory]
) -> None:
    """With no epoch the model is its start: each quantile output is the ridge shifted by
    that quantile of its training residuals, so 90% (50%) of training targets fall below
    the p90 (p50) outputs."""
    job, outcome = trained(settings, histories, "volume-horizons", tmp_path, epochs=0)
    data = load_data(settings, job, histories)
    loaded = artifacts.load(outcome.directory)
    train = data.split(TRAIN)
    p = artifacts.predict_outputs(loaded, data.series, train)
    assert (p[:, 1::2] > p[:, 0::2]).all()
    assert np.allclose((train.y_volume_sum <= p[:, 1::2]).mean(axis=0), 0.9, atol=0.01)
    assert np.allclose((train.y_volume_sum <= p[:, 0::2]).mean(axis=0), 0.5, atol=0.01)


def test_direction_horizons_writes_two_probabilities(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory]
) -> None:
    job, outcome = trained(settings, histories, "direction-horizons", tmp_path)
    pre = load_preprocess(outcome.directory)
    assert pre.target == DIRECTION_AT and pre.target_scaler is None
    assert [(o.horizon_bars, o.quantile) for o in pre.output_specs()] == [(1, None), (6, None)]
    report = outcome.report
    assert set(report["horizons"][1]["pooled"]["models"]) == {"model", "logistic", "majority"}
    p = artifacts.predict_outputs(
        artifacts.load(outcome.directory),
        load_data(settings, job, histories).series,
        load_data(settings, job, histories).split(TEST),
    )
    assert p.shape[1] == 2 and ((p > 0) & (p < 1)).all() and np.isfinite(p).all()


def test_walk_forward_of_volume_horizons_reports_each_horizon(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory]
) -> None:
    job = make_job(settings, "volume-horizons", registry=tmp_path / "models", extra=TINY)
    report = walkforward.run(settings, job, histories, folds=2, fold_days=3)
    assert [r["preset"] for r in report["horizons"]] == [
        "volume-horizons (1 bars)", "volume-horizons (6 bars)", "volume-horizons (24 bars)"
    ]  # fmt: skip
    for each in report["horizons"]:
        assert len(each["folds"]) == 2 and each["summary"]["reference"] == "ridge"
        for fold in each["folds"]:
            assert fold["metric"] == "mae" and 0 <= fold["coverage_90"]["value"] <= 1
            assert {"model", "ridge", "persistence", "seasonal_profile"} == set(fold["models"])
    assert not (tmp_path / "models").exists()
    table = walk_forward_table(report)
    assert table.count("model p90 coverage") == 3
    assert "24 bars" in walkforward.text(report)


def test_whalecast_train_trains_a_multi_horizon_preset(
    tmp_path: Path,
) -> None:
    config = tmp_path / "train.yml"
    config.write_text(f"inference: {{registry: {tmp_path / 'models'}}}\n"
                      "training: {test_days: 10, train_days: 30, bootstrap_samples: 20, "
                      "epochs: 1}\n")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "whalecast", "train", "-c", str(config),
         "--preset", "direction-horizons", "--candles", *SLICE, "--no-promote"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    written = last_json(done.stdout)
    assert written["model"] == "direction-horizons" and written["promoted"] is False
    assert "6 bars:" in done.stdout
    assert load_preprocess(Path(str(written["directory"]))).target == DIRECTION_AT


@pytest.mark.parametrize("backend", ["keras", "onnx"])
def test_the_daemon_serves_every_output_the_trainer_scored(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory], backend: str
) -> None:
    job, outcome = trained(settings, histories, "volume-horizons", tmp_path)
    runtime = ModelRuntime.load(tmp_path, job.model_name, outcome.version, backend)
    data = load_data(settings, job, histories)
    test = data.split(TEST)
    every = list(range(len(FEATURE_NAMES)))
    plain = Scaler(mean=[0.0] * len(every), scale=[1.0] * len(every))
    raw = windows(data.series, test, every, 24, plain)  # what the store hands the runtime
    values = runtime.predict(raw)
    scored = artifacts.predict_outputs(artifacts.load(outcome.directory), data.series, test)
    assert values.shape == (len(test), 6)
    assert_float32_close(values, np.expm1(scored))  # volume units, every output
