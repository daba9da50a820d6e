"""A training job: which preset, its resolved hyper-parameters, where it goes, what to do.

Resolving a job checks every override against the preset's table without importing
TensorFlow, so a typo in ``--set`` or config fails at once with the known keys.

Several trainers can run in parallel (a Kubernetes Indexed Job): ``training.jobs``
lists what each builds (preset, registry name, series group) and ``training.job_index``
(or ``whalecast train --job N``) picks one entry per process; each promotes its own
model name, so they never write the same ``CURRENT``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.params import HyperParams, resolve
from whalecast.settings import Settings, TrainingJob, TrainingSettings


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
    """The job for ``preset``; an ensemble also resolves each member it will fit."""
    params = resolve_params(settings, preset, extra)
    members = {}
    if preset == "ensemble" and not params["member_versions"]:
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


@dataclass(frozen=True)
class Selection:
    """What one ``whalecast train`` run builds: the preset, its registry name, its series."""

    preset: str
    model_name: str | None
    symbols: tuple[str, ...] = ()


def select(
    training: TrainingSettings,
    job_index: int | None,
    preset: str | None,
    model_name: str | None,
) -> Selection:
    """The entry of ``training.jobs`` chosen by ``job_index`` (flag, else setting), or the flags."""
    index = training.job_index if job_index is None else job_index
    if index is None:
        return Selection(preset or training.preset, model_name)
    if preset is not None or model_name is not None:
        raise ValueError("--preset and --name cannot be combined with a job index (training.jobs)")
    if not 0 <= index < len(training.jobs):
        raise ValueError(
            f"job index {index} is outside training.jobs (it has {len(training.jobs)} entries)"
        )
    job: TrainingJob = training.jobs[index]
    return Selection(job.preset, job.name or job.preset, tuple(job.symbols))


def narrowed(settings: Settings, symbols: tuple[str, ...]) -> Settings:
    """Settings whose ``exchanges`` list only ``symbols`` (all of them when empty)."""
    if not symbols:
        return settings
    exchanges = [
        e.model_copy(update={"symbols": [s for s in e.symbols if s in symbols]})
        for e in settings.exchanges
    ]
    kept = [e for e in exchanges if e.symbols]
    listed = {s for e in kept for s in e.symbols}
    if set(symbols) - listed:
        raise ValueError(f"job symbols not in any exchanges entry: {sorted(set(symbols) - listed)}")
    return settings.model_copy(update={"exchanges": kept})
