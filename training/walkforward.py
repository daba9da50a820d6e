"""Walk-forward (rolling-origin) evaluation: is the result of one test period a fluke?

One held-out year says how a model did in that year. Walk-forward asks it K times: the
last ``K × fold_days`` of history are cut into K consecutive test windows, and for each
window the preset is fitted afresh on everything before it, exactly as a normal run
would be on that day:

    fold k:  history cut at the end of test window k (nothing later is read)
             → train / validation / purge / test cuts as in ``whalecast train``
               (test_days = fold_days), scaler fitted on the fold's training rows
             → fit → score the model beside every baseline on window k, with day-block
               bootstrap intervals and the paired difference to the strong baseline.

Nothing is written to the registry and nothing is promoted: the output is a report
(per-fold metrics, the backtest per fold, and how many folds the model won, lost or
tied against the strong baseline). A multi-horizon preset is fitted once per fold and
gets one such report per horizon (``horizons``), judged on the p50's MAE against ridge,
each fold also carrying the p90 coverage. Ensembles of registry versions are refused: those
members were fitted on data after the early folds' test windows.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from training import artifacts
from training.baselines import STRONG
from training.dataset import iso
from training.folds import fold_ends, fold_test_days
from training.history import SeriesHistory
from training.horizon_fit import is_horizons
from training.jobs import Job
from training.params import TARGETS
from training.summary import paired_cell
from training.train import (
    evaluate,
    evaluate_multi,
    fit_preset,
    load_data,
    preprocess_of,
    promotion_metric,
)
from whalecast.logs import get_logger
from whalecast.settings import Settings

log = get_logger(__name__)


def truncated(histories: Sequence[SeriesHistory], end_ms: int) -> list[SeriesHistory]:
    """Each history with only the bars that opened before ``end_ms``."""
    return [replace(h, bars=h.bars[h.bars["open_ms"] < end_ms].reset_index(drop=True))
            for h in histories]  # fmt: skip


def run_fold(
    settings: Settings,
    job: Job,
    histories: Sequence[SeriesHistory],
    end_ms: int,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Fit and score one fold; the summary of its report (a multi-horizon preset: one
    summary per horizon under ``horizons``)."""
    data = load_data(settings, job, truncated(histories, end_ms))
    model, fits = fit_preset(data, job, settings.training.seed, stop)
    with tempfile.TemporaryDirectory(prefix="wc-walk-") as tmp:
        directory = Path(tmp)
        artifacts.save(directory, model, preprocess_of(job, data))
        loaded = artifacts.load(directory)
        if is_horizons(job.params):
            multi, _ = evaluate_multi(settings, job, data, loaded)
        else:
            report, _ = evaluate(settings, job, data, loaded, None)
    common = {
        "test_from": iso(data.cuts.test_ms),
        "test_to": iso(end_ms),
        "train_from": iso(data.cuts.train_ms),
        "epochs_run": {name: f.epochs_run for name, f in fits.items()},
    }
    if is_horizons(job.params):
        return {**common, "horizons": [_horizon_fold(common, scored, job)
                                       for scored in multi["horizons"]]}  # fmt: skip
    report.pop("_curve", None)
    metric = promotion_metric(settings, TARGETS[job.preset])
    fold = {**common, **_scores(report["test"], metric, report["reference_baseline"])}
    if "backtest" in report:
        fold["backtest"] = report["backtest"]["portfolio"]
    return fold


def _scores(test: dict[str, Any], metric: str, reference: str) -> dict[str, Any]:
    pooled = test["pooled"]
    return {
        "samples": test["samples"],
        "metric": metric,
        "models": {name: scores.get(metric) for name, scores in pooled["models"].items()},
        "vs_reference": pooled["paired"].get(reference, {}).get(metric),
        "test": test,
    }


def _horizon_fold(common: dict[str, Any], scored: dict[str, Any], job: Job) -> dict[str, Any]:
    quantile = bool(job.params.get("quantiles"))
    metric, reference = ("mae", "ridge") if quantile else ("auc", "logistic")
    fold = {**common, "horizon_bars": scored["horizon_bars"],
            **_scores(scored, metric, reference)}  # fmt: skip
    if quantile:
        fold["coverage_90"] = scored["pooled"]["models"]["model"]["coverage_90"]
    return fold


def summarise(folds: list[dict[str, Any]], reference: str) -> dict[str, Any]:
    """Mean of each model's metric over the folds, and the model's record against
    ``reference`` (a fold counts as won or lost only when its paired interval says so)."""
    names = folds[0]["models"].keys()
    means = {
        name: float(np.mean([f["models"][name]["value"] for f in folds]))
        for name in names
        if all(f["models"].get(name) and f["models"][name]["value"] is not None for f in folds)
    }
    verdicts = [(f["vs_reference"] or {}).get("verdict", "no difference") for f in folds]
    diffs = [f["vs_reference"]["value"] for f in folds if f["vs_reference"]]
    return {
        "mean": means,
        "reference": reference,
        "mean_difference": float(np.mean(diffs)) if diffs else None,
        "record": {v: verdicts.count(v) for v in ("better", "worse", "no difference")},
    }


def run(
    settings: Settings,
    job: Job,
    histories: Sequence[SeriesHistory],
    folds: int,
    *,
    fold_days: float | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Walk-forward over ``folds`` windows of ``fold_days`` (default: the configured test
    period cut in ``folds``); the report."""
    if job.params.get("member_versions"):
        raise ValueError(
            "walk-forward refits every fold; an ensemble of registry versions cannot be refitted"
        )
    fold_days = fold_days or settings.training.test_days / folds
    ends = fold_ends(histories, folds, fold_days)
    test_days = fold_test_days(ends, histories[0].series.bar_ms)
    training = settings.training.model_copy(update={"test_days": test_days})
    fold_settings = settings.model_copy(update={"training": training})
    results = []
    for k, end_ms in enumerate(ends):
        log.info("walk_forward_fold", fold=k + 1, of=folds, test_to=iso(end_ms))
        results.append(run_fold(fold_settings, job, histories, end_ms, stop))
    if is_horizons(job.params):
        return {"preset": job.preset, "hyper_parameters": job.params, "fold_days": fold_days,
                "horizons": _per_horizon(job, results, fold_days)}  # fmt: skip
    reference = STRONG[TARGETS[job.preset]]
    return {
        "preset": job.preset,
        "hyper_parameters": job.params,
        "folds": results,
        "fold_days": fold_days,
        "summary": summarise(results, reference),
    }


def _per_horizon(job: Job, results: list[dict[str, Any]], fold_days: float) -> list[dict[str, Any]]:
    """One walk-forward report per horizon, shaped like a single-output preset's."""
    out = []
    for j, first in enumerate(results[0]["horizons"]):
        folds = [r["horizons"][j] for r in results]
        reference = "ridge" if job.params.get("quantiles") else "logistic"
        out.append({"preset": f"{job.preset} ({first['horizon_bars']} bars)", "folds": folds,
                    "fold_days": fold_days, "summary": summarise(folds, reference)})  # fmt: skip
    return out


def text(report: dict[str, Any]) -> str:
    """The console table: one line per fold, then the record (per horizon, for a
    multi-horizon preset)."""
    if "horizons" in report:
        return "\n".join(text(each) for each in report["horizons"])
    summary = report["summary"]
    metric = report["folds"][0]["metric"]
    ref = summary["reference"]
    lines = [f"walk-forward {report['preset']}: {len(report['folds'])} folds of "
             f"{report['fold_days']:g} days, {metric}"]  # fmt: skip
    for fold in report["folds"]:
        model, base = fold["models"]["model"], fold["models"][ref]
        lines.append(
            f"  {fold['test_from'][:10]} → {fold['test_to'][:10]}  model {model['value']:.4f}"
            f"  {ref} {base['value']:.4f}  diff {paired_cell(fold['vs_reference'])}"
        )
    record = ", ".join(f"{n} {v}" for v, n in summary["record"].items())
    mean = summary["mean_difference"]
    shown = "–" if mean is None else f"{mean:+.4f}"
    lines.append(f"  mean difference {shown}; folds: {record}")
    return "\n".join(lines)
