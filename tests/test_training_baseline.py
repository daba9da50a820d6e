"""The strong baseline as a servable version: written when the network loses to it, equal to
the fitted linear model (for direction, the evaluation's logistic itself), promoted under
the same rules, served by full-window passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference.runtime import ModelRuntime
from streamer.features import FEATURE_NAMES
from tests.floats import assert_float32_close
from tests.training_helpers import histories_fixture, settings_fixture  # noqa: F401 - fixtures
from training import artifacts
from training.baselines import direction_baselines
from training.dataset import TEST, TRAIN, VALIDATION, windows
from training.history import SeriesHistory
from training.jobs import make_job
from training.linear import fit_linear
from training.reference import DESIGN
from training.summary import results_tables
from training.train import Outcome, inputs, load_data, run
from whalecast.artifact import Scaler, read_current
from whalecast.settings import Settings
from whalecast.targets import VOLUME

pytestmark = [pytest.mark.tf, pytest.mark.training]

CRIPPLED = {"units": 2, "epochs": 1, "learning_rate": 1e-6}  # a network that cannot win


def with_fallback(settings: Settings, **training: object) -> Settings:
    updated = settings.training.model_copy(update={"baseline_fallback": True, **training})
    return settings.model_copy(update={"training": updated})


def baseline_of(outcome: Outcome) -> Outcome:
    assert not outcome.decision.promote and not outcome.decision.beats_baseline
    assert outcome.baseline is not None, "the losing network's run wrote no baseline"
    return outcome.baseline


KINDS = {"volume": (VOLUME, "ridge")}


@pytest.mark.parametrize("preset", list(KINDS))
def test_baseline_version_predicts_what_the_fitted_linear_model_predicts(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory], preset: str
) -> None:
    target, kind = KINDS[preset]
    s = with_fallback(settings)
    job = make_job(s, preset, registry=tmp_path, extra=CRIPPLED, plots=False, publish=False)
    base = baseline_of(run(s, job, histories))

    meta = json.loads((base.directory / "metadata.json").read_text())
    assert meta["baseline"]["kind"] == kind and meta["baseline"]["inputs"] == 24 * len(
        job.params["features"]
    )
    assert meta["baseline"]["instead_of"] != base.version
    assert base.report["baseline"]["kind"] == kind  # the report says what it is, too
    page = results_tables([(base.report, meta)])  # and the results page
    assert f"| **{preset}: {kind} over its window**, last 30 days |" in page
    assert f"({kind} fit)" in page

    data = load_data(s, job, histories)
    split = inputs(data, job, TRAIN), inputs(data, job, VALIDATION)
    fitted = fit_linear(target, *split, s.training.seed)  # type: ignore[arg-type]
    x_test, _ = inputs(data, job, TEST)
    loaded = artifacts.load(base.directory)
    served = np.asarray(loaded.model.predict(x_test, verbose=0)).reshape(-1)
    assert_float32_close(served, fitted.raw(x_test))

    # scored like any model: the report's pooled value is that of these predictions
    metric = "mae" if target == VOLUME else "auc"
    pooled = base.report["test"]["pooled"]["models"]
    assert pooled["model"][metric]["value"] == pytest.approx(base.decision.new)
    # promoted under the same rules: in service exactly when the decision says so
    assert (read_current(tmp_path, preset) == base.version) == base.decision.promote


def test_baseline_version_is_served_by_full_window_passes(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory]
) -> None:
    s = with_fallback(settings, promote_against_baseline=True)
    job = make_job(s, "volume", registry=tmp_path, extra=CRIPPLED, plots=False, publish=False)
    base = baseline_of(run(s, job, histories))

    runtime = ModelRuntime.load(tmp_path, "volume", base.version, "keras")
    assert runtime.incremental is None
    assert runtime.incremental_off == "layer flat_window (Flatten) mixes time steps"

    data = load_data(s, job, histories)
    test = data.split(TEST)
    every = list(range(len(FEATURE_NAMES)))
    plain = Scaler(mean=[0.0] * len(every), scale=[1.0] * len(every))
    raw = windows(data.series, test, every, 24, plain)  # what the store hands the runtime
    values, stepped = runtime.predict_bar(raw, np.arange(len(raw)))
    assert stepped == 0
    expected = np.expm1(artifacts.predict(artifacts.load(base.directory), data.series, test))
    assert_float32_close(values[:, 0], expected)


def test_no_baseline_when_the_network_wins_or_is_forced(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory]
) -> None:
    s = with_fallback(settings, promote_against_baseline=False)  # nothing to lose against
    job = make_job(s, "volume", registry=tmp_path, extra=CRIPPLED, plots=False, publish=False)
    assert run(s, job, histories).baseline is None
    s = with_fallback(settings)
    forced = make_job(s, "volume", registry=tmp_path, extra=CRIPPLED, force=True, plots=False,
                      publish=False)  # fmt: skip
    outcome = run(s, forced, histories)
    assert outcome.decision.forced and outcome.baseline is None
    # a run that promotes nothing (an ablation, an evaluation) has no use for one either
    quiet = make_job(s, "volume", registry=tmp_path, extra=CRIPPLED, promote=False, plots=False,
                     publish=False)  # fmt: skip
    assert run(s, quiet, histories).baseline is None


def test_direction_baseline_version_is_the_evaluations_logistic_itself(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory]
) -> None:
    """The logistic every direction model is compared with, written as the version: it
    predicts what the evaluation's logistic predicted, scores what it scored, and goes into
    service when nothing better serves (it is not asked to beat itself)."""
    s = with_fallback(settings, promote_against_baseline=True)
    job = make_job(s, "direction", registry=tmp_path, extra=CRIPPLED, plots=False, publish=False)
    base = baseline_of(run(s, job, histories))
    meta = json.loads((base.directory / "metadata.json").read_text())
    assert meta["baseline"]["kind"] == "logistic" and meta["baseline"]["itself"] is True
    assert meta["baseline"]["inputs"] == len(DESIGN) == 17
    assert "| **direction: logistic itself**, last 30 days |" in results_tables(
        [(base.report, meta)]
    )

    data = load_data(s, job, histories)
    train, test = data.split(TRAIN), data.split(TEST)
    expected = direction_baselines(data.series, train, test, s.training.seed)["logistic"]
    served = artifacts.predict(artifacts.load(base.directory), data.series, test)
    assert_float32_close(served, expected)
    pooled = base.report["test"]["pooled"]["models"]
    assert pooled["model"]["auc"]["value"] == pytest.approx(
        pooled["logistic"]["auc"]["value"], abs=1e-4
    )
    assert base.decision.promote and read_current(tmp_path, "direction") == base.version

    # the next losing network's run writes it again, and the same logistic does not replace
    # the one in service: it must beat the version in service, like any model
    again = baseline_of(run(s, job, histories))
    assert not again.decision.promote and read_current(tmp_path, "direction") == base.version
