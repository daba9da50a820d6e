"""A training job: which preset, its resolved hyper-parameters, where it goes, what to do.

Resolving a job checks every override against the preset's table without importing
TensorFlow, so a typo in ``--set`` or config fails at once with the known keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.params import HyperParams, resolve
from whalecast.settings import Settings, TrainingSettings


class TrainingInterrupted(RuntimeError):
    """A stop was requested (SIGTERM) while a model was fitting; nothing is written."""


@dataclass(frozen=True)
class Job:
    preset: str
    params: HyperParams
    model_name: str
    registry: Path
    force: bool = False
    promote: bool = True
    publish: bool = True
    plots: bool = True
    verbose: int = 0
    member_params: dict[str, HyperParams] = field(default_factory=dict)


def resolve_params(
    settings: Settings, preset: str, extra: dict[str, Any] | None = None
) -> HyperParams:
    """Preset defaults < training.presets.<name> < training.* < ``extra`` (tuned file, flags)."""
    t: TrainingSettings = settings.training
    window = t.look_back_bars if preset == "volume" else t.window_bars
    common = {
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "learning_rate": t.learning_rate,
        "window": window,
    }
    params = resolve(preset, t.presets.get(preset), common, extra)  # type: ignore[call-overload]
    params["window"] = params["window"] or settings.features.window
    if params["window"] > settings.features.window:
        raise ValueError(
            f"{preset}: window {params['window']} is longer than features.window "
            f"{settings.features.window}, which the daemon keeps per series"
        )
    return params


def make_job(
    settings: Settings,
    preset: str,
    registry: Path | None = None,
    model_name: str | None = None,
    extra: dict[str, Any] | None = None,
    **flags: Any,
) -> Job:
    params = resolve_params(settings, preset, extra)
    members = {}
    if preset == "ensemble":
        shared = {"window": params["window"], "features": params["features"]}
        fitting = {k: (extra or {}).get(k) for k in ("epochs", "batch_size", "learning_rate")}
        for member in params["members"]:
            members[member] = resolve_params(settings, member, {**fitting, **shared})
    return Job(
        preset=preset,
        params=params,
        model_name=model_name or preset,
        registry=Path(registry or settings.inference.registry),
        member_params=members,
        **flags,
    )
