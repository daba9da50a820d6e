"""Hyper-parameter search with Optuna on a time-ordered validation split.

Each trial fits the preset on the training split and scores the best validation loss;
the test period is never read, so tuning cannot leak into the reported test metrics.
The best parameters are written as JSON that ``whalecast train --params FILE`` applies.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from training.artifacts import utc_now
from training.dataset import TRAIN, VALIDATION
from training.fit import fit, set_seed
from training.history import SeriesHistory
from training.jobs import TrainingInterrupted, make_job
from training.params import resolve
from training.presets import build
from training.train import inputs, load_data
from whalecast.logs import get_logger
from whalecast.settings import Settings

log = get_logger(__name__)

Space = Callable[[optuna.Trial], dict[str, Any]]


def _recurrent(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "units": trial.suggest_int("units", 16, 128, step=16),
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
    }


def _direction(trial: optuna.Trial) -> dict[str, Any]:
    return {**_recurrent(trial), "dropout": trial.suggest_float("dropout", 0.0, 0.5)}


def _deep(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "units": trial.suggest_int("units", 32, 256, step=32),
        "units_2": trial.suggest_int("units_2", 16, 128, step=16),
        "dropout": trial.suggest_float("dropout", 0.1, 0.5),
        "l2": trial.suggest_float("l2", 1e-6, 1e-3, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
    }


SPACES: dict[str, Space] = {
    "volume": _recurrent,
    "direction": _direction,
    "direction-deep": _deep,
    "direction-gru": _deep,
}


def tune(
    settings: Settings,
    preset: str,
    histories: Sequence[SeriesHistory],
    *,
    trials: int,
    epochs: int,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run the study; return the best parameters with the study's record."""
    if preset not in SPACES:
        raise ValueError(f"tune a member preset, not {preset!r}: one of {', '.join(SPACES)}")
    job = make_job(settings, preset, extra={"epochs": epochs})
    data = load_data(settings, job, histories)
    train, validation = inputs(data, job, TRAIN), inputs(data, job, VALIDATION)
    shape = (job.params["window"], len(data.columns))
    seed = settings.training.seed

    def objective(trial: optuna.Trial) -> float:
        params = resolve(preset, job.params, SPACES[preset](trial))
        set_seed(seed)
        result = fit(build(preset, params, *shape), params, train, validation, stop=stop)
        best = min(result.history["val_loss"])
        log.info("tune_trial", preset=preset, trial=trial.number, val_loss=round(best, 6),
                 **trial.params)  # fmt: skip
        return best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    try:
        study.optimize(objective, n_trials=trials, catch=())
    except TrainingInterrupted:
        log.warning("tune_interrupted", completed_trials=len(study.trials) - 1)
        if not any(t.value is not None for t in study.trials):
            raise
    return {
        "preset": preset,
        "params": study.best_params,
        "objective": "best validation loss",
        "value": study.best_value,
        "trials": [
            {"number": t.number, "value": t.value, "params": t.params} for t in study.trials
        ],
        "epochs_per_trial": epochs,
        "cuts": data.cuts.as_dict(),
        "seed": seed,
        "created_at": utc_now(),
    }
