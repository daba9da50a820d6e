"""Train one preset: defaults, data, model, fit, evaluate, save, promote.

Read it top to bottom like the notebook it replaces. :func:`run` is the whole story; the
helpers above it each do one step. ``whalecast train`` resolves a :class:`Job` from the
settings and command-line flags, loads history (CSV or REST) and calls :func:`run`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from streamer.features import FEATURE_VERSION
from training import artifacts, onnx_export, plots
from training.backtest import BacktestConfig
from training.backtest import run as backtest
from training.baselines import STRONG, baselines
from training.dataset import (
    TEST,
    TRAIN,
    VALIDATION,
    Samples,
    SeriesData,
    build_samples,
    feature_index,
    fit_scaler,
    inert,
    iso,
    make_cuts,
    prepare,
    target_scaler,
    windows,
)
from training.evaluate import report_of_classes, score_all, train_test_gap, truth
from training.fit import FitResult, fit, set_seed
from training.history import SeriesHistory
from training.horizon_eval import decide_horizons, evaluate_horizons
from training.horizon_fit import (
    is_horizons,
    outputs_of,
    start_at_quantile_ridges,
    targets,
    volume_scaler,
)
from training.jobs import Job
from training.linear import LinearFit, fit_linear, linear_model
from training.params import TARGETS
from training.presets import Member, build, combine, describe
from training.promote import Decision, decide, promote
from training.reference import embeddable, reference_fit
from whalecast.artifact import (
    METADATA_FILE,
    REPORT_FILE,
    ArtifactError,
    OutputSpec,
    Preprocess,
    Scaler,
    write_artifact,
    write_json,
)
from whalecast.logs import get_logger
from whalecast.settings import Settings
from whalecast.targets import DIRECTION, VOLUME, VOLUME_SUM, Target

log = get_logger(__name__)

BASELINE_WINDOW = 24  # the ridge baseline reads 24 lags of log volume
GAP_SAMPLES = 50_000  # the train-test gap is measured on the most recent training samples


# --- defaults: the job (preset, resolved hyper-parameters, registry) comes from training.jobs


# --- data ------------------------------------------------------------------------------------


@dataclass
class Data:
    series: list[SeriesData]
    samples: Samples
    cuts: Any
    columns: list[int]
    scaler: Scaler
    y_scaler: Scaler | None
    #: the linear fit over the window a wide preset started from (the baseline version reuses it)
    linear: LinearFit | None = None

    def split(self, which: int) -> Samples:
        return self.samples.of(which)


def load_data(
    settings: Settings, job: Job, histories: Sequence[SeriesHistory], serving_window: int = 0
) -> Data:
    t = settings.training
    window = job.params["window"]
    if t.purge_bars < window:
        raise ValueError(f"training.purge_bars ({t.purge_bars}) must be >= the window ({window})")
    series = prepare(histories)
    cuts = make_cuts(series, t.test_days, t.validation_fraction, t.train_days, t.purge_bars)
    horizons = job.params.get("horizons") or ()
    samples = build_samples(series, max(window, BASELINE_WINDOW, serving_window), cuts, horizons)
    columns = feature_index(job.params["features"])
    train = samples.of(TRAIN)
    scaler = fit_scaler(series, train, columns, window)
    y_scaler = target_scaler(train) if TARGETS[job.preset] == VOLUME else None
    if job.params.get("quantiles"):
        y_scaler = volume_scaler(train, job.params)
    return Data(series, samples, cuts, columns, scaler, y_scaler)


def inputs(data: Data, job: Job, which: int) -> tuple[np.ndarray, np.ndarray]:
    samples = data.split(which)
    x = windows(data.series, samples, data.columns, job.params["window"], data.scaler)
    if is_horizons(job.params):
        return x, targets(samples, job.params, data.y_scaler)
    if data.y_scaler is None:
        return x, samples.y_up.astype(np.float32)
    y = (samples.y_log_volume - data.y_scaler.mean[0]) / data.y_scaler.scale[0]
    return x, y.astype(np.float32)


# --- model and fit ---------------------------------------------------------------------------


def fit_preset(
    data: Data, job: Job, seed: int, stop: threading.Event | None
) -> tuple[keras.Model, dict[str, FitResult]]:
    """One network, or every ensemble member and their average: the model and the fits."""
    train, val = inputs(data, job, TRAIN), inputs(data, job, VALIDATION)
    shape = (job.params["window"], len(data.columns))
    if job.preset != "ensemble":
        set_seed(seed)
        model = build(job.preset, job.params, *shape)
        if job.params.get("init_linear") and is_horizons(job.params):
            start_at_quantile_ridges(model, job.params, train, val)
        elif job.params.get("init_linear"):
            data.linear = start_at_linear(model, TARGETS[job.preset], train, val, seed)
        result = fit(model, job.params, train, val, stop=stop, verbose=job.verbose)
        return result.model, {job.preset: result}
    if job.params["member_versions"]:
        refs = job.params["member_versions"]
        members = [
            artifacts.registry_member(job.registry, ref, data.scaler, job.params) for ref in refs
        ]
        return combine(members, *shape), {}
    fits = {}
    for offset, (name, params) in enumerate(job.member_params.items()):
        set_seed(seed + offset)
        model = build(name, params, *shape)
        fits[name] = fit(model, params, train, val, stop=stop, verbose=job.verbose)
    members = [Member(name, r.model) for name, r in fits.items()]
    return combine(members, *shape), fits


def start_at_linear(model: keras.Model, target: Target, train: tuple[np.ndarray, np.ndarray],
                    val: tuple[np.ndarray, np.ndarray], seed: int) -> LinearFit:  # fmt: skip
    """Set the model's ``linear`` layer (Dense over the flattened window) to the linear fit
    of the strong baseline's kind on the same inputs: fitting starts from that baseline."""
    fitted = fit_linear(target, train, val, seed)
    model.get_layer("linear").set_weights(
        [fitted.coef.reshape(-1, 1).astype(np.float32), np.array([fitted.intercept], np.float32)]
    )
    return fitted


def preprocess_of(job: Job, data: Data) -> Preprocess:
    """What serving needs to turn stored windows into this model's input, and back."""
    target = TARGETS[job.preset]
    outputs = None
    if is_horizons(job.params):
        outputs = [OutputSpec(target=target, horizon_bars=h, quantile=q)
                   for h, q in outputs_of(job.params)]  # fmt: skip
    return Preprocess(
        feature_version=FEATURE_VERSION,
        features=list(job.params["features"]),
        window=job.params["window"],
        scaler=data.scaler,
        target=target,
        target_transform="log1p" if target in (VOLUME, VOLUME_SUM) else "identity",
        target_scaler=data.y_scaler,
        outputs=outputs,
    )


# --- evaluate --------------------------------------------------------------------------------


def evaluate(
    settings: Settings,
    job: Job,
    data: Data,
    loaded: artifacts.Loaded,
    serving: artifacts.Loaded | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The test report: the model beside baselines (and the serving version), with intervals."""
    t = settings.training
    target = TARGETS[job.preset]
    train, test = data.split(TRAIN), data.split(TEST)
    preds = {"model": artifacts.predict(loaded, data.series, test)}
    preds.update(baselines(target, data.series, train, test, t.seed))
    if serving is not None:
        preds["serving"] = artifacts.predict(serving, data.series, test)
    block_ms = int(t.bootstrap_block_hours * 3_600_000)
    reference = STRONG[target]
    scores = score_all(target, test, preds, data.series,
                       bootstrap_samples=t.bootstrap_samples, block_ms=block_ms, seed=t.seed)  # fmt: skip
    newest = np.zeros(len(train), dtype=bool)
    newest[np.argsort(train.target_ms, kind="stable")[-GAP_SAMPLES:]] = True
    recent = train.take(newest)
    report: dict[str, Any] = {
        "target": target,
        "reference_baseline": reference,
        "test": scores,
        "train_test_gap": train_test_gap(
            target, recent, artifacts.predict(loaded, data.series, recent), test, preds["model"]
        ),
    }
    if target != VOLUME:
        report["classification_report"] = {
            name: report_of_classes(test, preds[name]) for name in ("model", reference)
        }
        frame = _backtest_frame(data, test)
        cfg = BacktestConfig(
            t.fees_bps,
            t.threshold,
            t.backtest_mode,
            365 * 86_400_000 / data.series[0].series.bar_ms,
        )
        report["backtest"], curve = backtest(frame, preds["model"], cfg)
        logistic, _ = backtest(frame, preds[reference], cfg)
        report["backtest"]["baseline_portfolio"] = {reference: logistic["portfolio"]["strategy"]}
        report["_curve"] = curve
    if serving is not None:
        report["serving"] = artifacts.serving_overlap(serving, data.cuts.test_ms)
    return report, preds


def _backtest_frame(data: Data, test: Samples) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "series": test.tags(data.series),
            "target_ms": test.target_ms,
            "bar_return": test.bar_return,
        }
    )


def evaluate_multi(
    settings: Settings, job: Job, data: Data, loaded: artifacts.Loaded
) -> tuple[dict[str, Any], Decision]:
    """The test report and decision of a multi-horizon model (:mod:`training.horizon_eval`)."""
    t = settings.training
    train, test = data.split(TRAIN), data.split(TEST)
    scores = evaluate_horizons(
        job.params, data.series, train, test, artifacts.predict_outputs(loaded, data.series, test),
        bootstrap_samples=t.bootstrap_samples, block_ms=int(t.bootstrap_block_hours * 3_600_000),
        seed=t.seed,
    )  # fmt: skip
    metric = promotion_metric(settings, DIRECTION)
    decision, verdicts = decide_horizons(job.params, scores, metric, force=job.force,
                                         significance=t.promote_requires_significance)  # fmt: skip
    report = {
        "target": TARGETS[job.preset],
        "outputs": [{"horizon_bars": h, "quantile": q} for h, q in outputs_of(job.params)],
        "horizons": [{"horizon_bars": h, **scored} for h, scored in scores.items()],
        "horizon_verdicts": verdicts,
    }
    return report, decision


def promotion_metric(settings: Settings, target: str) -> str:
    """The metric promotion (and walk-forward) judges a model of ``target`` by."""
    t = settings.training
    return t.promote_metric_volume if target == VOLUME else t.promote_metric_direction


def promotion_decision(
    settings: Settings,
    job: Job,
    report: dict[str, Any],
    serving_version: str | None,
    is_baseline: bool = False,
) -> Decision:
    """``is_baseline``: the version is the strong baseline itself, so it is measured against
    the version in service only (it cannot beat itself)."""
    t = settings.training
    metric = promotion_metric(settings, report["target"])
    models = report["test"]["pooled"]["models"]
    ref = report["reference_baseline"]
    serving = None
    if serving_version is not None and "serving" in models:
        serving = (serving_version, float(models["serving"][metric]["value"]))
    return decide(
        metric,
        models["model"][metric]["value"],
        (ref, models[ref][metric]["value"]),
        serving,
        margin=t.promote_min_improvement,
        force=job.force,
        against_baseline=t.promote_against_baseline and not is_baseline,
        verdicts=_verdicts(report, metric) if t.promote_requires_significance else None,
    )


def _verdicts(report: dict[str, Any], metric: str) -> dict[str, str]:
    """The paired bootstrap verdict of the model against each competitor on ``metric``."""
    paired = report["test"]["pooled"].get("paired", {})
    return {
        name: str(scores[metric]["verdict"]) for name, scores in paired.items() if metric in scores
    }


# --- save -------------------------------------------------------------------------------------


def write_plots(
    directory: Path,
    report: dict[str, Any],
    fits: dict[str, FitResult],
    data: Data,
    preds: dict[str, np.ndarray],
) -> list[str]:
    test = data.split(TEST)
    y = truth(report["target"], test)
    names = []
    if fits:  # an ensemble of registry versions fits nothing
        histories = {k: f.history for k, f in fits.items()}
        names.append(plots.training_history(histories, directory / "training_history.png"))
    if report["target"] == VOLUME:
        shown = {k: preds[k] for k in ("model", "persistence", "ridge")}
        tags = test.tags(data.series)
        names.append(plots.volume_fit(y, shown, test.target_ms, tags, directory / "volume_fit.png"))
    else:
        names.append(plots.equity_curve(report.pop("_curve"), directory / "equity_curve.png"))
        shown = {
            k: preds[k]
            for k in ("model", "logistic") + (("serving",) if "serving" in preds else ())
        }
        names.append(plots.roc(y, shown, directory / "roc_curve.png"))
    return names


def metadata(
    settings: Settings,
    job: Job,
    model: keras.Model,
    data: Data,
    fits: dict[str, FitResult],
    *,
    histories: Sequence[SeriesHistory],
    code: dict[str, Any],
) -> dict[str, Any]:
    counts = {}
    tags = data.samples.tags(data.series)
    for tag in sorted(set(tags)):
        mine = data.samples.split[tags == tag]
        counts[str(tag)] = {
            name: int((mine == s).sum())
            for s, name in ((TRAIN, "train"), (VALIDATION, "validation"), (TEST, "test"))
        }
    return {
        "model": job.model_name,
        "preset": job.preset,
        "architecture": {
            "layers": describe(model),
            "input_shape": [None, job.params["window"], len(data.columns)],
        },
        "parameter_count": int(model.count_params()),
        "hyper_parameters": job.params,
        "member_hyper_parameters": job.member_params,
        "data": {
            "series": [
                {
                    "series": h.series.tag,
                    "source": h.source,
                    "first_bar": iso(h.first_ms),
                    "last_bar": iso(h.last_ms),
                    "bars": len(h.bars),
                }
                for h in histories
            ],
            "cuts": data.cuts.as_dict(),
            "samples": counts,
            "feature_version": FEATURE_VERSION,
            "inert_features": inert(data.scaler, job.params["features"]),
        },
        "fit": {
            name: {
                "epochs_run": f.epochs_run,
                "best_epoch": f.best_epoch,
                "seconds": round(f.seconds, 2),
                "train_sequences": f.train_sequences,
                "sequences_per_second": round(f.sequences_per_second, 1),
            }
            for name, f in fits.items()
        },
        "libraries": artifacts.library_versions(),
        "code": code,
        "config": {
            "training": settings.training.model_dump(mode="json"),
            "features": settings.features.model_dump(mode="json"),
        },
        "seed": settings.training.seed,
        "trained_at": artifacts.utc_now(),
    }


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    model: str
    version: str
    directory: Path
    decision: Decision
    report: dict[str, Any]
    published: bool = False
    #: the strong baseline written as a version because the network did not beat it
    baseline: Outcome | None = None


@dataclass(frozen=True)
class Context:
    """What every version written by one run shares: its inputs and the version in service."""

    settings: Settings
    job: Job
    data: Data
    histories: Sequence[SeriesHistory]
    serving: artifacts.Loaded | None
    code: dict[str, Any]


def write_version(
    ctx: Context,
    model: keras.Model,
    fits: dict[str, FitResult],
    extra_metadata: dict[str, Any] | None = None,
    is_baseline: bool = False,
) -> Outcome:
    """Save ``model`` as a new version, score it from the saved files, decide and promote."""
    settings, job, data, serving = ctx.settings, ctx.job, ctx.data, ctx.serving
    preprocess = preprocess_of(job, data)
    result: dict[str, Any] = {}

    # evaluate + save: scored from the saved files, reloaded in safe mode, beside baselines
    def fill(directory: Path) -> None:
        artifacts.save(directory, model, preprocess)
        add_onnx_graphs(directory, model, preprocess)
        loaded = artifacts.load(directory)
        if is_horizons(job.params):
            report, decision = evaluate_multi(settings, job, data, loaded)
            report["promotion"] = decision.as_dict()
            history = {k: f.history for k, f in fits.items()}
            report["plots"] = [plots.training_history(history, directory / "training_history.png")
                               ] if job.plots and fits else []  # fmt: skip
        else:
            report, preds = evaluate(settings, job, data, loaded, serving)
            decision = promotion_decision(
                settings, job, report, serving.directory.name if serving else None, is_baseline
            )
            report["promotion"] = decision.as_dict()
            report["plots"] = write_plots(directory, report, fits, data, preds) if job.plots else []
        report.pop("_curve", None)
        meta = metadata(settings, job, model, data, fits, histories=ctx.histories, code=ctx.code)
        if extra_metadata:
            meta.update(extra_metadata)
            report.update(extra_metadata)
        write_json(directory / REPORT_FILE, report)
        write_json(directory / METADATA_FILE, meta)
        result.update(report=report, decision=decision)

    version, directory = write_artifact(job.registry, job.model_name, fill)
    decision: Decision = result["decision"]
    log.info(
        "model_written",
        model=job.model_name,
        version=version,
        promote=decision.promote,
        reason=decision.reason,
        **({"baseline": extra_metadata["baseline"]["kind"]} if extra_metadata else {}),
    )

    # promote: only when better (or forced), then tell the daemon
    published = False
    if job.promote and decision.promote:
        published = promote(
            job.registry, job.model_name, version, settings.redis if job.publish else None,
            sync_artifact=settings.inference.registry_sync == "redis",
        )  # fmt: skip
    return Outcome(job.model_name, version, directory, decision, result["report"], published)


def wants_baseline(settings: Settings, job: Job, decision: Decision) -> bool:
    """The network lost to the strong baseline, and the run may promote the baseline instead
    (not a forced run, nor one that promotes nothing: an ablation, an evaluation)."""
    t = settings.training
    allowed = t.baseline_fallback and t.promote_against_baseline and job.promote and not job.force
    # a multi-horizon model has no single-output linear version to fall back on
    return allowed and not decision.beats_baseline and not is_horizons(job.params)


def write_baseline(ctx: Context, network_version: str) -> Outcome:
    """The strong baseline as a version: for direction the logistic itself when the window
    holds its inputs (promoted against the version in service only), else the baseline's
    kind of model fitted over the network's own window."""
    started = time.perf_counter()
    data, window = ctx.data, ctx.job.params["window"]
    itself = TARGETS[ctx.job.preset] == DIRECTION and embeddable(data.columns, window)
    fitted = None if itself else data.linear  # the fit the network started from, if any
    reused = fitted is not None
    if itself:
        fitted = reference_fit(data.series, data.split(TRAIN), data.columns, data.scaler,
                               window=window, seed=ctx.settings.training.seed)  # fmt: skip
    elif fitted is None:
        train, val = inputs(data, ctx.job, TRAIN), inputs(data, ctx.job, VALIDATION)
        fitted = fit_linear(TARGETS[ctx.job.preset], train, val, ctx.settings.training.seed)
    seconds = round(time.perf_counter() - started, 2)
    model = linear_model(fitted, window, len(data.columns))
    extra = {"baseline": {**fitted.describe(), "fit_seconds": seconds, "reused": reused,
                          "itself": itself, "instead_of": network_version}}  # fmt: skip
    return write_version(ctx, model, {}, extra, is_baseline=itself)


def add_onnx_graphs(directory: Path, model: Any, preprocess: Preprocess) -> None:
    """The ONNX graphs the daemon's ``onnx`` backend serves; a model that does not export
    is still written (the TensorFlow backends serve it) and the reason logged."""
    try:
        onnx_export.write_for(directory, model, preprocess)
    except ArtifactError as e:
        log.error("onnx_export_failed", reason=str(e), served_by="tensorflow backends only")


def run(
    settings: Settings,
    job: Job,
    histories: Sequence[SeriesHistory],
    stop: threading.Event | None = None,
) -> Outcome:
    target = TARGETS[job.preset]
    code = artifacts.code_revision()  # the source this run started from
    # data: the daemon's features over history, split by time, scaled on training rows only
    serving = artifacts.serving(job.registry, job.model_name)
    why_not = artifacts.comparable(serving, target) if serving is not None else None
    if serving is not None and is_horizons(job.params):
        why_not = "multi-horizon models are judged against the baselines only"
    if why_not is not None:
        log.warning("serving_model_not_comparable", model=job.model_name, reason=why_not)
        serving = None
    data = load_data(settings, job, histories, serving.preprocess.window if serving else 0)
    log.info(
        "dataset",
        preset=job.preset,
        **{
            SPLIT: len(data.split(s))
            for s, SPLIT in ((TRAIN, "train"), (VALIDATION, "validation"), (TEST, "test"))
        },
    )

    # model + fit
    model, fits = fit_preset(data, job, settings.training.seed, stop)

    # save, evaluate, decide, promote
    ctx = Context(settings, job, data, histories, serving, code)
    outcome = write_version(ctx, model, fits)

    # never serve worse than the best simple model: when the network lost to it, the
    # baseline becomes a version (see write_baseline for which, and what it must beat)
    if wants_baseline(settings, job, outcome.decision):
        outcome.baseline = write_baseline(ctx, outcome.version)
    return outcome
