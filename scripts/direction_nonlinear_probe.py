"""Direction inputs: a non-linear probe, gradient-boosted trees over the same inputs.

    python scripts/direction_nonlinear_probe.py --data DATA_DIR --out nonlinear.json

The linear probe (``scripts/direction_inputs_probe.py``) found no linear model over the
reference, cross-asset or regime inputs that beats the trainer's logistic on the test year.
This asks the same of a non-linear one: scikit-learn's HistGradientBoostingClassifier over
the reference's 17 inputs, over those and the cross-asset inputs, and over those and the
regime inputs. Rows, split, inputs and scores are the linear probe's (imported from it):
the trainer's samples where every new input is defined, the trainer's cuts, and each tree
model minus the trainer's logistic fitted on the same rows, on paired day-block intervals.

The trees have fixed, modest hyper-parameters (``HGB``) and a fixed seed. Their number is
found by early stopping on the last ``TAIL_FRACTION`` of the fitting rows in time (a
purged tail, never a random slice): trees are added ``STEP`` at a time while the log loss
on the tail improves (up to ``MAX_ITER``, patience ``PATIENCE`` steps), and the best count
is refitted on all the fitting rows.

Reported: the test year and the validation period, fitted on the training rows (as the
trainer's baseline is); and walk-forward over the trainer's ``--walk-forward`` windows
(``training.folds``: ``FOLDS`` consecutive windows ending at the data's end), the trees and
the logistic refitted for each window on every probe row before it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from direction_inputs_probe import (
    BOOTSTRAP_SAMPLES,
    CROSS,
    PURGE_BARS,
    REGIME,
    SEED,
    TEST_DAYS,
    TITLES,
    VALIDATION_FRACTION,
    WINDOW,
    Inputs,
    auc_table,
    candle_paths,
    fit,
    fmt,
    p_up,
    paired_table,
    scored,
)

from training.dataset import (
    TEST,
    TRAIN,
    VALIDATION,
    Samples,
    SeriesData,
    build_samples,
    iso,
    make_cuts,
    prepare,
)
from training.folds import fold_ends, fold_test_days
from training.history import SeriesHistory, from_csv
from training.scoring import log_loss

HGB = {"learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 200,
       "l2_regularization": 1.0, "max_bins": 255}  # fmt: skip
MAX_ITER = 400
STEP = 10
PATIENCE = 5  # steps of STEP trees without a better tail loss
TAIL_FRACTION = 0.15
FOLDS = 4
TREES = {"trees: reference": (), "trees: +cross": CROSS, "trees: +both": CROSS + REGIME}


# --- the trees ---------------------------------------------------------------------------------


def trees(n: int, warm: bool = False) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=n, warm_start=warm, early_stopping=False,
                                          random_state=SEED, **HGB)  # fmt: skip


def tree_count(x: np.ndarray, y: np.ndarray, target_ms: np.ndarray, purge_ms: int) -> int:
    """The number of trees: grown on the head of the rows, judged on their last
    ``TAIL_FRACTION`` in time (the head ends ``purge_ms`` before the tail)."""
    cut = float(np.quantile(target_ms, 1.0 - TAIL_FRACTION))
    head, tail = target_ms < cut - purge_ms, target_ms >= cut
    model = trees(STEP, warm=True)
    best, best_loss = 0, np.inf
    while model.max_iter <= MAX_ITER:
        model.fit(x[head], y[head])
        loss = log_loss(y[tail], p_up(model, x[tail]))
        if loss < best_loss:
            best, best_loss = model.max_iter, loss
        elif model.max_iter - best >= PATIENCE * STEP:
            break
        model.set_params(max_iter=model.max_iter + STEP)
    return best


def fit_trees(x: np.ndarray, rows: Samples, purge_ms: int) -> tuple[Any, int]:
    y = rows.y_up.astype(int)
    n = tree_count(x, y, rows.target_ms, purge_ms)
    return trees(n).fit(x, y), n


# --- one fit, scored on some rows ---------------------------------------------------------------


class Fitted:
    """The trainer's logistic and each tree model, fitted on the same rows."""

    def __init__(
        self, inputs: Inputs, rows: Samples, variants: Mapping[str, Sequence[str]]
    ) -> None:
        purge_ms = PURGE_BARS * inputs.data[0].series.bar_ms
        self.inputs, self.variants = inputs, variants
        self.logistic = fit(inputs.design(rows, ()), rows.y_up)
        fits = {name: fit_trees(inputs.design(rows, names), rows, purge_ms)
                for name, names in variants.items()}  # fmt: skip
        self.models = {name: model for name, (model, _) in fits.items()}
        self.trees = {name: n for name, (_, n) in fits.items()}

    def predictions(self, rows: Samples) -> dict[str, np.ndarray]:
        """P(up) of each tree model on ``rows``, and of the logistic as ``reference``."""
        preds = {name: p_up(self.models[name], self.inputs.design(rows, names))
                 for name, names in self.variants.items()}  # fmt: skip
        return preds | {"reference": p_up(self.logistic, self.inputs.design(rows, ()))}


def against_logistic(
    rows: Samples, preds: dict[str, np.ndarray], data: Sequence[SeriesData], bootstrap: int
) -> dict[str, Any]:
    """Each tree model beside the logistic on ``rows``: AUC and the paired difference."""
    variants = {name: scored(rows, {"model": p, "reference": preds["reference"]}, data, bootstrap)
                for name, p in preds.items() if name != "reference"}  # fmt: skip
    return {"first_target": iso(int(rows.target_ms.min())),
            "last_target": iso(int(rows.target_ms.max())),
            "rows": len(rows), "variants": variants}  # fmt: skip


# --- walk-forward -------------------------------------------------------------------------------


def cut_at(d: SeriesData, end_ms: int) -> SeriesData:
    """The series with only the bars that opened before ``end_ms`` (every input and feature
    at a bar reads that bar and earlier ones only, so nothing else changes)."""
    keep = d.open_ms < end_ms
    return SeriesData(d.series, d.open_ms[keep], d.close[keep], d.volume[keep], d.features[keep])


def walk_forward(
    histories: Sequence[SeriesHistory],
    inputs: Inputs,
    variants: Mapping[str, Sequence[str]],
    test_days: float,
    bootstrap: int,
) -> dict[str, Any]:
    """Each window: the trainer's fold cuts, every model refitted on the probe rows before
    the window, scored on it; then the windows' predictions scored together."""
    ends = fold_ends(histories, FOLDS, test_days / FOLDS)
    fold_days = fold_test_days(ends, inputs.data[0].series.bar_ms)
    folds, windows, preds = [], [], []
    for end_ms in ends:
        part = [cut_at(d, end_ms) for d in inputs.data]
        cuts = make_cuts(part, fold_days, VALIDATION_FRACTION, None, PURGE_BARS)
        samples = build_samples(part, WINDOW, cuts)
        rows = samples.take(inputs.defined(samples))
        before, window = rows.take(rows.split != TEST), rows.of(TEST)
        fitted = Fitted(inputs, before, variants)
        windows.append(window)
        preds.append(fitted.predictions(window))
        folds.append({"test_from": iso(cuts.test_ms), "test_to": iso(end_ms),
                      "fit_rows": len(before), "trees": fitted.trees,
                      **against_logistic(window, preds[-1], inputs.data, bootstrap)})  # fmt: skip
    together = Samples(**{f.name: np.concatenate([getattr(w, f.name) for w in windows])
                          for f in fields(Samples)})  # fmt: skip
    every = {name: np.concatenate([p[name] for p in preds]) for name in preds[0]}
    return {"folds": folds, "together": against_logistic(together, every, inputs.data, bootstrap)}


# --- the whole probe ----------------------------------------------------------------------------


def run(
    histories: Sequence[SeriesHistory],
    variants: Mapping[str, Sequence[str]] = TREES,
    test_days: float = TEST_DAYS,
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
) -> dict[str, Any]:
    data = prepare(histories)
    cuts = make_cuts(data, test_days, VALIDATION_FRACTION, None, PURGE_BARS)
    samples = build_samples(data, WINDOW, cuts)
    inputs = Inputs.of(data)
    probe = samples.take(inputs.defined(samples))
    train = probe.of(TRAIN)
    fitted = Fitted(inputs, train, variants)
    test, validation = probe.of(TEST), probe.of(VALIDATION)
    return {
        "cuts": cuts.as_dict(),
        "rows": {
            "train": len(train),
            "validation": int((probe.split == VALIDATION).sum()),
            "test": int((probe.split == TEST).sum()),
        },
        "trees": fitted.trees,
        "test": against_logistic(test, fitted.predictions(test), data, bootstrap_samples),
        "validation": against_logistic(
            validation, fitted.predictions(validation), data, bootstrap_samples
        ),
        "walk_forward": walk_forward(histories, inputs, variants, test_days, bootstrap_samples),
    }


# --- report -------------------------------------------------------------------------------------


def pooled_difference(part: dict[str, Any], name: str) -> dict[str, Any]:
    est: dict[str, Any] = part["variants"][name]["pooled"]["paired"]["reference"]["auc"]
    return est


def series_record(part: dict[str, Any], name: str) -> str:
    verdicts = [s["paired"]["reference"]["auc"]["verdict"]
                for s in part["variants"][name]["series"].values()]  # fmt: skip
    return f"{verdicts.count('better')}/{verdicts.count('worse')}"


def walk_forward_table(folds: list[dict[str, Any]]) -> list[str]:
    names = list(folds[0]["variants"])
    lines = ["| test window | fit rows | test rows | logistic AUC | "
             + " | ".join(f"{n} − logistic (series better/worse)" for n in names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]  # fmt: skip
    for f in folds:
        logistic = f["variants"][names[0]]["pooled"]["models"]["reference"]["auc"]
        cells = [f"{fmt(pooled_difference(f, n), True)} {pooled_difference(f, n)['verdict']} "
                 f"({series_record(f, n)})" for n in names]  # fmt: skip
        lines.append(f"| {f['test_from'][:13]} → {f['test_to'][:13]} | {f['fit_rows']:,} | "
                     f"{f['rows']:,} | {fmt(logistic)} | " + " | ".join(cells) + " |")  # fmt: skip
    for n in names:
        diffs = [pooled_difference(f, n) for f in folds]
        verdicts = [d["verdict"] for d in diffs]
        lines.append(f"\n{n}: mean difference {np.mean([d['value'] for d in diffs]):+.4f}; "
                     + ", ".join(f"{v} {verdicts.count(v)}"
                                 for v in ("better", "no difference", "worse")))  # fmt: skip
    return lines


def part_tables(title: str, part: dict[str, Any]) -> list[str]:
    tags = list(next(iter(part["variants"].values()))["series"])
    return [f"{title}: {part['first_target'][:10]} to {part['last_target'][:10]}, "
            f"{part['rows']} rows.", "", *auc_table(part["variants"], tags), "",
            *paired_table(part["variants"], tags), ""]  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    lines = part_tables(TITLES["test"], report["test"])
    lines += part_tables(TITLES["validation"], report["validation"])
    lines += ["Trees (early-stopped count) fitted on the training rows: "
              + ", ".join(f"{n} {k}" for n, k in report["trees"].items()), ""]  # fmt: skip
    folds = report["walk_forward"]["folds"]
    lines += ["Walk-forward, every model refitted on the rows before each window:", ""]
    lines += [*walk_forward_table(folds), ""]
    counts = [", ".join(str(k) for k in f["trees"].values()) for f in folds]
    lines += ["Trees per window: " + "; ".join(counts), ""]
    title = f"The {len(folds)} walk-forward windows' predictions scored together"
    return "\n".join(lines + part_tables(title, report["walk_forward"]["together"]))


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="directory of the candle CSVs")
    parser.add_argument("--out", type=Path, required=True, help="JSON report to write")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = run(from_csv(candle_paths(args.data)))
    report["settings"] = {"hgb": HGB, "max_iter": MAX_ITER, "step": STEP, "patience": PATIENCE,
                          "tail_fraction": TAIL_FRACTION, "folds": FOLDS, "seed": SEED,
                          "inputs": {n: list(v) for n, v in TREES.items()}}  # fmt: skip
    report["seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown(report))
    print(f"\n{report['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
