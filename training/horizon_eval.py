"""Evaluation and promotion of a multi-horizon model on the held-out test period.

Per horizon, pooled over the series and per series, the model beside the baselines of
:mod:`training.horizon_baselines` with day-block bootstrap intervals and paired
differences (:mod:`training.scoring`). Volume forecasts are scored as quantiles
(:mod:`training.quantile_scoring`); direction forecasts with the next-bar direction
metrics. A volume model is promoted only when every horizon passes the quantile rule
(:func:`training.quantile_scoring.judge_horizon`); a direction model only when, at every
horizon, its promotion metric beats logistic's on a paired interval that excludes zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from training.dataset import Samples, SeriesData
from training.horizon_baselines import direction_horizon_baselines, volume_horizon_baselines
from training.horizon_fit import outputs_of
from training.params import HyperParams
from training.promote import Decision
from training.quantile_scoring import judge_horizon, score_quantiles, verdicts_as_dicts
from training.scoring import DIRECTION_METRICS, BlockBootstrap, better, score

Scorer = Callable[[np.ndarray, Mapping[str, np.ndarray], BlockBootstrap], dict[str, Any]]


def _direction_score(
    y: np.ndarray, preds: Mapping[str, np.ndarray], boot: BlockBootstrap
) -> dict[str, Any]:
    return score(DIRECTION_METRICS, y, preds, boot)


def score_horizon(
    y: np.ndarray,
    preds: Mapping[str, np.ndarray],
    test: Samples,
    data: Sequence[SeriesData],
    scorer: Scorer,
    *,
    bootstrap_samples: int,
    block_ms: int,
    seed: int,
) -> dict[str, Any]:
    """One horizon's scores, pooled and per series."""
    blocks = test.target_ms // block_ms
    out: dict[str, Any] = {
        "samples": len(test),
        "blocks": len(np.unique(blocks)),
        "pooled": scorer(y, preds, BlockBootstrap(blocks, bootstrap_samples, seed)),
        "series": {},
    }
    tags = test.tags(data)
    for tag in sorted(set(tags)):
        mask = tags == tag
        boot = BlockBootstrap(blocks[mask], bootstrap_samples, seed)
        scored = scorer(y[mask], {k: v[mask] for k, v in preds.items()}, boot)
        out["series"][str(tag)] = {"samples": int(mask.sum()), **scored}
    return out


def evaluate_horizons(
    params: HyperParams,
    data: Sequence[SeriesData],
    train: Samples,
    test: Samples,
    model: np.ndarray,
    *,
    bootstrap_samples: int,
    block_ms: int,
    seed: int,
) -> dict[int, dict[str, Any]]:
    """``out[h]``: the test scores of the model's ``h``-bar outputs beside the baselines.

    ``model`` is the ``(n, outputs)`` prediction in the training space of each output."""
    horizons = [int(h) for h in params["horizons"]]
    outputs = outputs_of(params)
    quantiles = [float(q) for q in params.get("quantiles") or []]
    if quantiles:
        rivals: Mapping[int, Mapping[str, np.ndarray]] = volume_horizon_baselines(
            data, train, test, horizons, quantiles, seed=seed
        )
        truth = test.y_volume_sum
        scorer: Scorer = score_quantiles
    else:
        rivals = direction_horizon_baselines(data, train, test, horizons, seed)
        truth, scorer = test.y_up_at, _direction_score
    out = {}
    for j, h in enumerate(horizons):
        columns = [k for k, (oh, _) in enumerate(outputs) if oh == h]
        mine = model[:, columns] if quantiles else model[:, columns[0]]
        preds = {"model": mine, **rivals[h]}
        out[h] = score_horizon(truth[:, j], preds, test, data, scorer,
                               bootstrap_samples=bootstrap_samples, block_ms=block_ms,
                               seed=seed)  # fmt: skip
    return out


def _value(pooled: Mapping[str, Any], name: str, metric: str) -> float:
    return float(pooled["models"][name][metric]["value"])


def decide_horizons(
    params: HyperParams,
    scores: Mapping[int, Mapping[str, Any]],
    metric: str,
    *,
    force: bool,
    significance: bool = True,
) -> tuple[Decision, list[dict[str, Any]]]:
    """The promotion decision over every horizon and each horizon's verdict (with
    ``significance`` off, "better" is judged on the point values)."""
    quantile = bool(params.get("quantiles"))
    per: list[dict[str, Any]] = []
    failures: list[str] = []
    for h, scored in scores.items():
        pooled = scored["pooled"]
        baselines = [n for n in pooled["models"] if n != "model"]
        if quantile:
            verdict = verdicts_as_dicts([judge_horizon(h, pooled, baselines, significance)])[0]
        else:
            said = str(pooled["paired"]["logistic"][metric]["verdict"])
            if not significance and better(metric, _value(pooled, "model", metric),
                                           _value(pooled, "logistic", metric)):  # fmt: skip
                said = "better"  # on the point values
            fail = [] if said == "better" else [f"{h}-bar {metric} not better than logistic"]
            verdict = {"horizon_bars": h, "metric": metric, "verdict": said,
                       "passes": not fail, "failures": fail}  # fmt: skip
        per.append(verdict)
        failures += verdict["failures"]
    rule = "quantile rule" if quantile else f"{metric} against logistic at every horizon"
    first = scores[min(scores)]["pooled"]["models"]
    key = "mae" if quantile else metric
    reference = "ridge" if quantile else "logistic"
    if not failures:
        reason = f"passes the {rule} at every horizon (nothing in service is compared)"
    else:
        reason = ("forced: " if force else "") + "; ".join(failures)
    decision = Decision(
        promote=force or not failures, metric=key, new=float(first["model"][key]["value"]),
        baseline=float(first[reference][key]["value"]), baseline_name=reference,
        serving=None, serving_version=None, forced=force and bool(failures), reason=reason,
        beats_baseline=not failures,
    )  # fmt: skip
    return decision, per
