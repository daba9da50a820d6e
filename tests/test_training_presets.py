"""Every preset trains on a small real slice and leaves a complete, loadable artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamer.features import SEED_FEATURES
from tests.training_helpers import check_artifact, histories_fixture, settings_fixture  # noqa: F401
from training import artifacts
from training.dataset import TEST, TRAIN, VALIDATION
from training.history import SeriesHistory
from training.jobs import make_job
from training.linear import fit_linear
from training.params import DEFAULTS, PresetError, resolve, without
from training.presets import build
from training.summary import results_tables
from training.train import inputs, load_data, run
from whalecast.artifact import list_versions, load_preprocess, read_current
from whalecast.settings import Settings
from whalecast.targets import DIRECTION, VOLUME

pytestmark = [pytest.mark.tf, pytest.mark.training]


def test_volume_preset(tmp_path: Path, settings: Settings, histories: list[SeriesHistory]) -> None:
    job = make_job(settings, "volume", registry=tmp_path, force=True, publish=False)
    assert job.params["features"] == ["log_volume"] and job.params["activation"] == "relu"
    outcome = run(settings, job, histories)
    check_artifact(outcome.directory, "next_bar_volume", 1)
    pre = load_preprocess(outcome.directory)
    assert pre.target_transform == "log1p" and pre.target_scaler is not None
    report = outcome.report
    assert {"persistence", "seasonal_naive", "ridge"} <= set(report["test"]["pooled"]["models"])
    assert set(report["plots"]) == {"training_history.png", "volume_fit.png"}
    # the scaled, log-space prediction maps back to a volume of the right size
    mae = report["test"]["pooled"]["models"]["model"]["mae"]["value"]
    assert 0 < mae < 2.0
    assert read_current(tmp_path, "volume") == outcome.version
    meta = json.loads((outcome.directory / "metadata.json").read_text())
    page = results_tables([(report, meta)])
    assert "| **volume**, last 30 days |" in page and "| ridge, last 30 days |" in page


@pytest.mark.parametrize("preset", ["direction", "direction-deep"])
def test_direction_presets(
    preset: str, tmp_path: Path, settings: Settings, histories: list[SeriesHistory]
) -> None:
    job = make_job(settings, preset, registry=tmp_path, promote=False, plots=preset == "direction")
    outcome = run(settings, job, histories)
    check_artifact(outcome.directory, "p_up_next_bar", len(SEED_FEATURES))
    report = outcome.report
    assert {"majority", "previous_bar", "reversal", "logistic"} <= set(
        report["test"]["pooled"]["models"]
    )
    assert "log_loss" not in report["test"]["pooled"]["models"]["previous_bar"]
    assert set(report["backtest"]["portfolio"]) == {
        "strategy",
        "strategy_before_fees",
        "buy_and_hold",
    }
    assert report["classification_report"]["model"]["up"]["support"] > 0
    assert set(report["train_test_gap"]) == {"accuracy", "balanced_accuracy", "auc", "log_loss"}
    if preset == "direction":
        assert set(report["plots"]) == {"training_history.png", "equity_curve.png", "roc_curve.png"}
    assert read_current(tmp_path, preset) is None  # promote=False leaves CURRENT alone
    meta = json.loads((outcome.directory / "metadata.json").read_text())
    page = results_tables([(report, meta)])
    assert f"| **{preset}**, last 30 days |" in page and "| buy and hold |" in page
    assert list_versions(tmp_path, preset) == [outcome.version]


def test_seed_architecture_parameter_count_and_overrides() -> None:
    deep = build("direction-deep", resolve("direction-deep"), 24, 30)
    assert deep.count_params() == 134_337  # the seed's 24 x 30 input (its "~35,000" is wrong)
    v1 = build("direction-deep", resolve("direction-deep"), 24, len(SEED_FEATURES))
    assert v1.count_params() == 133_825
    volume = build("volume", resolve("volume"), 24, 1)
    assert volume.count_params() == 4 * 50 * (1 + 50 + 1) + 51
    assert resolve("volume", {"epochs": 3}, {"learning_rate": 1})["learning_rate"] == 1.0
    with pytest.raises(PresetError, match="no hyper-parameter 'unitz'"):
        resolve("direction", {"unitz": 3})
    with pytest.raises(PresetError, match="unknown preset"):
        resolve("transformer")
    assert set(DEFAULTS) == {
        "volume", "volume-wide", "direction", "direction-wide", "direction-deep",
        "direction-gru", "ensemble", "volume-horizons", "direction-horizons",
    }  # fmt: skip
    assert resolve("direction")["features"] == list(SEED_FEATURES)


@pytest.mark.parametrize(("preset", "target"),
                         [("volume-wide", VOLUME), ("direction-wide", DIRECTION)])  # fmt: skip
def test_wide_presets_start_at_the_linear_fit_over_their_window(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory], preset: str, target: str
) -> None:
    frozen = {"epochs": 1, "learning_rate": 1e-12, "units": 4, "dense_units": 4}
    job = make_job(settings, preset, registry=tmp_path, extra=frozen, promote=False,
                   plots=False, publish=False)  # fmt: skip
    assert "log_volume_mean_24" in job.params["features"]
    outcome = run(settings, job, histories)
    check_artifact(outcome.directory, target, len(job.params["features"]))
    # the residual branch starts at zero and the linear map at the ridge / logistic fit over
    # the same window: a model that has not moved predicts what that fit predicts
    data = load_data(settings, job, histories)
    split = inputs(data, job, TRAIN), inputs(data, job, VALIDATION)
    fitted = fit_linear(target, *split, settings.training.seed)  # type: ignore[arg-type]
    x_test, _ = inputs(data, job, TEST)
    served = artifacts.load(outcome.directory).model.predict(x_test, verbose=0).reshape(-1)
    np.testing.assert_allclose(served, fitted.raw(x_test), atol=1e-4)


def test_ablation_is_scored_against_the_full_model_in_service(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory]
) -> None:
    tiny = {"epochs": 1, "units": 4, "dense_units": 4}
    full = make_job(settings, "volume-wide", registry=tmp_path, extra=tiny, force=True,
                    plots=False, publish=False)  # fmt: skip
    full_run = run(settings, full, histories)
    features = without(full.params["features"], ["calendar"])
    assert "hour_sin_2" not in features and "log_volume_mean_6" in features
    ablation = make_job(settings, "volume-wide", registry=tmp_path, promote=False, plots=False,
                        extra={**tiny, "features": features}, publish=False)  # fmt: skip
    outcome = run(settings, ablation, histories)
    assert read_current(tmp_path, "volume-wide") == full_run.version  # the full one still serves
    paired = outcome.report["test"]["pooled"]["paired"]["serving"]["mae"]
    assert paired["low"] <= paired["value"] <= paired["high"]
    runs = [
        (o.report, json.loads((o.directory / "metadata.json").read_text()))
        for o in (full_run, outcome)
    ]
    page = results_tables(runs)
    assert "| volume-wide | calendar | mae |" in page  # the ablation table
    assert "| **volume-wide**, last 30 days |" in page  # the full run in the main table
    assert "volume-wide without calendar" in page  # and its fit
