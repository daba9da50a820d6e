"""The ensemble preset: its members fitted and averaged in one safe-mode model."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from streamer.features import SEED_FEATURES
from tests.training_helpers import check_artifact, histories_fixture, settings_fixture  # noqa: F401
from training.history import SeriesHistory
from training.jobs import make_job
from training.train import run
from whalecast.settings import Settings

pytestmark = [pytest.mark.tf, pytest.mark.training]


def test_ensemble_is_one_safe_model_averaging_its_members(
    tmp_path: Path, settings: Settings, histories: list[SeriesHistory]
) -> None:
    default = make_job(settings, "ensemble", registry=tmp_path)
    assert list(default.member_params) == ["direction", "direction-deep", "direction-gru"]
    assert default.member_params["direction-deep"]["units"] == 8  # member overrides apply
    job = make_job(settings, "ensemble", registry=tmp_path, promote=False, plots=False,
                   extra={"members": ["direction", "direction-gru"]})  # fmt: skip
    outcome = run(settings, job, histories)
    check_artifact(outcome.directory, "p_up_next_bar", len(SEED_FEATURES))
    model = keras.saving.load_model(outcome.directory / "model.keras", safe_mode=True)
    assert type(model.layers[-1]).__name__ == "Average"
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    assert len(members) == 2
    x = np.random.default_rng(1).normal(size=(4, 24, len(SEED_FEATURES))).astype("float32")
    mean = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    assert np.allclose(model.predict(x, verbose=0), mean, atol=1e-6)
    meta = json.loads((outcome.directory / "metadata.json").read_text())
    assert set(meta["fit"]) == {"direction", "direction-gru"}
