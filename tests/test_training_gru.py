"""The GRU preset, and an ensemble of registry versions fitted with different scalers."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from streamer.features import SEED_FEATURES
from tests.training_helpers import check_artifact, histories_fixture, settings_fixture  # noqa: F401 - fixtures
from training.artifacts import load, predict
from training.dataset import TEST, build_samples, make_cuts, prepare
from training.history import SeriesHistory
from training.jobs import make_job
from training.train import Outcome, run
from whalecast.settings import Settings

pytestmark = [pytest.mark.tf, pytest.mark.training]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="module")
def gru(registry: Path, settings: Settings, histories: list[SeriesHistory]) -> Outcome:
    job = make_job(settings, "direction-gru", registry=registry, plots=False, promote=False)
    return run(settings, job, histories)


def test_gru_preset(gru: Outcome) -> None:
    check_artifact(gru.directory, "p_up_next_bar", len(SEED_FEATURES))
    model = keras.saving.load_model(gru.directory / "model.keras", safe_mode=True)
    assert [type(layer).__name__ for layer in model.layers].count("GRU") == 2


def test_ensemble_of_registry_versions_with_different_scalers(
    registry: Path, gru: Outcome, settings: Settings, histories: list[SeriesHistory]
) -> None:
    training = settings.training.model_copy(update={"train_days": 15})
    s = settings.model_copy(update={"training": training})  # other rows, other scaler
    job = make_job(s, "direction", registry=registry, promote=False, plots=False,
                   extra={"epochs": 1})  # fmt: skip
    direction = run(s, job, histories)
    a, b = load(direction.directory), load(gru.directory)
    assert a.preprocess.scaler != b.preprocess.scaler

    refs = [f"direction/{direction.version}", f"direction-gru/{gru.version}"]
    job = make_job(settings, "ensemble", registry=registry, promote=False, plots=False,
                   extra={"member_versions": refs})  # fmt: skip
    assert job.member_params == {}
    outcome = run(settings, job, histories)
    check_artifact(outcome.directory, "p_up_next_bar", len(SEED_FEATURES))
    ensemble = load(outcome.directory)
    assert [type(x).__name__ for x in ensemble.model.layers].count("Normalization") == 1
    # each member still sees exactly the input it was trained on
    data = prepare(histories)
    cuts = make_cuts(data, test_days=10, validation_fraction=0.2, train_days=30, purge_bars=24)
    test = build_samples(data, 24, cuts).of(TEST)
    expected = (predict(a, data, test) + predict(b, data, test)) / 2
    assert np.allclose(predict(ensemble, data, test), expected, atol=1e-5)
