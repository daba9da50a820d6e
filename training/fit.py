"""Fitting one network: seeds, callbacks, and an interruptible ``model.fit``.

Reproducibility: ``keras.utils.set_random_seed`` seeds Python, numpy and the backend;
TensorFlow's threading is left at its default, so two runs on the same data agree within
floating-point noise (not bit for bit). Batches are shuffled within the training split
only; validation and test never mix with it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from training.jobs import TrainingInterrupted
from training.params import HyperParams
from whalecast.logs import get_logger

log = get_logger(__name__)


def set_seed(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    np.random.seed(seed)


@dataclass
class FitResult:
    model: keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    seconds: float
    sequences_per_second: float
    train_sequences: int
    params: HyperParams = field(default_factory=dict)


class _StopOnEvent(keras.callbacks.Callback):  # type: ignore[misc]
    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.stop.is_set():
            self.model.stop_training = True


class _EpochLog(keras.callbacks.Callback):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = {k: round(float(v), 5) for k, v in (logs or {}).items()}
        seconds = round(time.perf_counter() - self.started, 2)
        log.info("epoch", model=self.name, epoch=epoch + 1, seconds=seconds, **values)


def callbacks(params: HyperParams, name: str, stop: threading.Event | None) -> list[Any]:
    out: list[Any] = [_EpochLog(name)]
    if params["patience"] > 0:
        out.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=params["patience"], restore_best_weights=True
            )
        )
    if params["lr_patience"] > 0:
        out.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=params["lr_factor"], patience=params["lr_patience"]
            )
        )
    if stop is not None:
        out.append(_StopOnEvent(stop))
    return out


def fit(
    model: keras.Model,
    params: HyperParams,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    *,
    stop: threading.Event | None = None,
    verbose: int = 0,
) -> FitResult:
    """Fit with early stopping on the validation split; raise if a stop was requested."""
    x, y = train
    started = time.perf_counter()
    history = model.fit(
        x,
        y,
        validation_data=validation,
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        shuffle=True,
        callbacks=callbacks(params, model.name, stop),
        verbose=verbose,
    )
    seconds = time.perf_counter() - started
    if stop is not None and stop.is_set():
        raise TrainingInterrupted(f"stop requested while fitting {model.name}")
    hist = {k: [float(v) for v in values] for k, values in history.history.items()}
    epochs_run = len(hist.get("loss", []))
    val = hist.get("val_loss", [])
    best = int(np.argmin(val)) + 1 if val else epochs_run
    return FitResult(
        model=model,
        history=hist,
        epochs_run=epochs_run,
        best_epoch=best,
        seconds=seconds,
        sequences_per_second=len(x) * epochs_run / seconds if seconds > 0 else 0.0,
        train_sequences=len(x),
        params=dict(params),
    )
