"""Direction inputs: a linear probe of cross-asset and regime inputs.

    python scripts/direction_inputs_probe.py --data DATA_DIR --out probe.json

Does the next-bar direction get any easier to predict, for a linear model, when it also
sees the market (BTC's and the equal-weight market's recent returns, the series' return
relative to the market, the market's realised volatility) or the volatility and volume
regime? The question is asked before those inputs go into the shared feature code.

Everything but the new inputs is the trainer's own: the candles are read and the v1
features computed by ``training.history`` / ``training.dataset``; the split is the
trainer's (test = the last ``TEST_DAYS`` before the end of the shortest series, purged);
the reference is the trainer's logistic baseline on its own design
(``training.baselines.logistic_design``), and every variant is that same pipeline
(standardised on training rows only, then LogisticRegression) with more columns. Scores
are the trainer's: AUC pooled and per series with day-block bootstrap intervals, and
each variant minus the reference on paired intervals (``training.evaluate.score_all``).

Every new input at bar ``t`` reads bars ``<= t`` only (tests/test_direction_probe.py);
the target is the trainer's, ``close[t + 1] > close[t]``. All variants are fitted and
scored on the same rows: the trainer's samples where every new input is defined.

Three settings are reported: fitted on the training rows and scored on the test year (the
trainer's baseline); the same fits scored on the validation period, which they never see;
and every variant refitted on the training and validation rows, scored on the test year.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.baselines import direction_baselines, logistic_design, logistic_pipeline
from training.dataset import (
    DAY_MS,
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
from training.evaluate import score_all
from training.history import from_csv
from training.scoring import auc
from whalecast.targets import DIRECTION

# --- defaults: the trainer's (whalecast.settings.TrainingSettings) -------------------------

FILES = ("binance_BTC-USDT_1h.csv", "binance_ETH-USDT_1h.csv",
         "binance_SOL-USDT_1h.csv", "binance_XRP-USDT_1h.csv")  # fmt: skip
LEADER = "BTC"  # the asset whose own returns every series sees
TEST_DAYS = 365.0
VALIDATION_FRACTION = 0.2  # the baselines fit on the train split only, as in the trainer
PURGE_BARS = 24
WINDOW = 24  # the trainer's sample validity window (training.train.BASELINE_WINDOW)
BOOTSTRAP_SAMPLES = 1000
BLOCK_HOURS = 24.0
SEED = 42
MIN_MARKET = 2  # the market return needs at least this many series with the bar

CROSS = ("btc_ret_1", "btc_ret_3", "btc_ret_6", "btc_ret_24",
         "mkt_ret_1", "mkt_ret_6", "mkt_ret_24",
         "rel_ret_1", "rel_ret_6", "mkt_vol_24")  # fmt: skip
REGIME = ("vol_ratio_24_168", "volume_surprise", "ret_1_x_vol_regime")
VARIANTS = {"reference": (), "+cross": CROSS, "+regime": REGIME, "+both": CROSS + REGIME}


# --- inputs: pure functions of aligned (time, series) arrays ----------------------------------


def log_returns(log_close: np.ndarray, k: int) -> np.ndarray:
    """``log c[t] - log c[t - k]`` per column; NaN for the first ``k`` rows or across a gap."""
    out = np.full_like(log_close, np.nan)
    out[k:] = log_close[k:] - log_close[:-k]
    return out


def trailing(values: np.ndarray, n: int, stat: str) -> np.ndarray:
    """``stat`` (``mean`` or ``std``, ddof 1) over the ``n`` rows ending at each row, per
    column; NaN unless all ``n`` are defined."""
    rolling = pd.DataFrame(values).rolling(n, min_periods=n)
    return np.asarray((rolling.mean() if stat == "mean" else rolling.std(ddof=1)).to_numpy())


def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / b, np.nan)


def market(per_series: np.ndarray) -> np.ndarray:
    """Equal-weight mean over the series that have a value, NaN below ``MIN_MARKET``."""
    count = np.isfinite(per_series).sum(axis=1)
    total = np.nansum(per_series, axis=1)
    return np.where(count >= MIN_MARKET, total / np.maximum(count, 1), np.nan)


def cross_inputs(close: np.ndarray, leader: int) -> dict[str, np.ndarray]:
    """The cross-asset inputs of every series at every row, ``(rows, series)`` each."""
    log_close = np.log(close)
    ret = {k: log_returns(log_close, k) for k in (1, 3, 6, 24)}
    mkt = {k: market(ret[k]) for k in (1, 6, 24)}
    n_series = close.shape[1]

    def every(column: np.ndarray) -> np.ndarray:
        return np.repeat(column[:, None], n_series, axis=1)

    out = {f"btc_ret_{k}": every(ret[k][:, leader]) for k in (1, 3, 6, 24)}
    out |= {f"mkt_ret_{k}": every(mkt[k]) for k in (1, 6, 24)}
    out |= {f"rel_ret_{k}": ret[k] - mkt[k][:, None] for k in (1, 6)}
    out["mkt_vol_24"] = every(trailing(mkt[1][:, None], 24, "std")[:, 0])
    return out


def regime_inputs(close: np.ndarray, volume: np.ndarray) -> dict[str, np.ndarray]:
    """The volatility and volume regime of each series at every row, ``(rows, series)`` each."""
    ret_1 = log_returns(np.log(close), 1)
    vol_ratio = ratio(trailing(ret_1, 24, "std"), trailing(ret_1, 168, "std"))
    log_volume = np.log1p(volume)
    surprise = ratio(
        log_volume - trailing(log_volume, 24, "mean"), trailing(log_volume, 168, "std")
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        regime = np.log(vol_ratio)
    return {
        "vol_ratio_24_168": vol_ratio,
        "volume_surprise": surprise,
        "ret_1_x_vol_regime": ret_1 * regime,
    }


def new_inputs(close: np.ndarray, volume: np.ndarray, leader: int) -> dict[str, np.ndarray]:
    return cross_inputs(close, leader) | regime_inputs(close, volume)


# --- alignment --------------------------------------------------------------------------------


def aligned(data: Sequence[SeriesData]) -> tuple[int, np.ndarray, np.ndarray]:
    """Close and volume of every series on one time grid: ``(first_ms, close, volume)``."""
    bar_ms = data[0].series.bar_ms
    first = min(int(d.open_ms[0]) for d in data)
    rows = (max(int(d.open_ms[-1]) for d in data) - first) // bar_ms + 1
    close = np.full((rows, len(data)), np.nan)
    volume = np.full((rows, len(data)), np.nan)
    for j, d in enumerate(data):
        at = (d.open_ms - first) // bar_ms
        close[at, j], volume[at, j] = d.close, d.volume
    return first, close, volume


def design_of(
    inputs: dict[str, np.ndarray], names: Sequence[str], grid_row: np.ndarray, series: np.ndarray
) -> np.ndarray:
    return (
        np.column_stack([inputs[n][grid_row, series] for n in names])
        if names
        else np.empty((len(grid_row), 0))
    )


def grid_rows(data: Sequence[SeriesData], samples: Samples, first_ms: int) -> np.ndarray:
    """The grid row of each sample's bar ``t``."""
    open_ms = np.empty(len(samples), dtype=np.int64)
    for i, d in enumerate(data):
        mask = samples.series == i
        open_ms[mask] = d.open_ms[samples.row[mask]]
    return (open_ms - first_ms) // data[0].series.bar_ms


class Inputs:
    """The new inputs of every series on one time grid, and the designs that read them."""

    def __init__(
        self, data: Sequence[SeriesData], first_ms: int, values: dict[str, np.ndarray]
    ) -> None:
        self.data, self.first_ms, self.values = data, first_ms, values

    @classmethod
    def of(cls, data: Sequence[SeriesData]) -> Inputs:
        first_ms, close, volume = aligned(data)
        leader = next(i for i, d in enumerate(data) if d.series.base_asset == LEADER)
        return cls(data, first_ms, new_inputs(close, volume, leader))

    def extra(self, which: Samples, names: Sequence[str]) -> np.ndarray:
        rows = grid_rows(self.data, which, self.first_ms)
        return design_of(self.values, names, rows, which.series)

    def defined(self, samples: Samples) -> np.ndarray:
        """The samples where every new input is defined: the rows every variant uses."""
        return np.asarray(np.isfinite(self.extra(samples, CROSS + REGIME)).all(axis=1))

    def design(self, which: Samples, names: Sequence[str]) -> np.ndarray:
        """The trainer's logistic design with the new inputs ``names`` as more columns."""
        return np.column_stack([logistic_design(self.data, which), self.extra(which, names)])


def candle_paths(directory: Path) -> list[Path]:
    return [directory / name for name in FILES]


# --- fit and score ----------------------------------------------------------------------------


def fit(x_train: np.ndarray, y_train: np.ndarray) -> Any:
    """The trainer's logistic baseline pipeline, on a design with more columns."""
    return logistic_pipeline(SEED).fit(x_train, y_train.astype(int))


def p_up(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_proba(x)[:, 1])


def scored(
    test: Samples,
    preds: dict[str, np.ndarray],
    data: Sequence[SeriesData],
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
) -> Any:
    return score_all(DIRECTION, test, preds, data, bootstrap_samples=bootstrap_samples,
                     block_ms=int(BLOCK_HOURS * 3_600_000), seed=SEED)  # fmt: skip


# --- report -----------------------------------------------------------------------------------


def fmt(est: dict[str, Any], signed: bool = False) -> str:
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"{f.format(est['value'])} [{f.format(est['low'])}, {f.format(est['high'])}]"


def auc_table(variants: dict[str, Any], tags: Sequence[str]) -> list[str]:
    short = [t.split(":")[1] for t in tags]
    lines = ["| inputs | pooled AUC | " + " | ".join(short) + " |",
             "|---|---|" + "---|" * len(tags)]  # fmt: skip
    first = next(iter(variants))  # every variant's scores carry the same reference
    rows = [("reference (trainer's logistic)", first, "reference")]
    rows += [(name, name, "model") for name in variants]
    for label, name, key in rows:
        s = variants[name]
        cells = [fmt(s["pooled"]["models"][key]["auc"])]
        cells += [fmt(s["series"][t]["models"][key]["auc"]) for t in tags]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def paired_table(variants: dict[str, Any], tags: Sequence[str]) -> list[str]:
    short = [t.split(":")[1] for t in tags]
    lines = ["| inputs − reference, AUC (paired) | pooled | " + " | ".join(short) + " |",
             "|---|---|" + "---|" * len(tags)]  # fmt: skip
    for name, s in variants.items():
        parts = [s["pooled"]] + [s["series"][t] for t in tags]
        cells = [f"{fmt(p['paired']['reference']['auc'], True)} "
                 f"{p['paired']['reference']['auc']['verdict']}" for p in parts]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


TITLES = {
    "test": "Test year, fitted on the training rows (the trainer's baseline)",
    "validation": "Validation period, fitted on the training rows (the fits never see it)",
    "test_refit": "Test year, refitted on the training and validation rows",
}


def markdown(report: dict[str, Any]) -> str:
    lines: list[str] = []
    for key, title in TITLES.items():
        part = report[key]
        variants = part["variants"]
        tags = list(next(iter(variants.values()))["series"])
        lines += [f"{title}: {part['first_target'][:10]} to {part['last_target'][:10]}, "
                  f"{part['rows']} rows.", ""]  # fmt: skip
        lines += [*auc_table(variants, tags), "", *paired_table(variants, tags), ""]
    in_sample = report["train_auc_in_sample"]
    lines.append("In-sample AUC on the training rows: "
                 + ", ".join(f"{name} {value:.4f}" for name, value in in_sample.items()))  # fmt: skip
    return "\n".join(lines)


def arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="directory of the candle CSVs")
    parser.add_argument("--out", type=Path, required=True, help="JSON report to write")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = arguments(argv)
    started = time.monotonic()

    # data: the trainer's features, split and samples
    data = prepare(from_csv(candle_paths(args.data)))
    cuts = make_cuts(data, TEST_DAYS, VALIDATION_FRACTION, None, PURGE_BARS)
    samples = build_samples(data, WINDOW, cuts)
    train_all, test_all = samples.of(TRAIN), samples.of(TEST)

    # the reference on the trainer's own rows: reproduces the trainer's logistic baseline
    trainer_logistic = direction_baselines(data, train_all, test_all, SEED)["logistic"]
    reproduced = scored(test_all, {"model": trainer_logistic}, data)

    # inputs: the new ones on one time grid, then the rows where every one is defined
    inputs = Inputs.of(data)
    probe = samples.take(inputs.defined(samples))
    train, validation, test = probe.of(TRAIN), probe.of(VALIDATION), probe.of(TEST)

    # fit each variant on the same rows, score each against the reference on the same rows
    design = inputs.design

    def fitted(rows: Samples) -> dict[str, Any]:
        return {name: fit(design(rows, names), rows.y_up) for name, names in VARIANTS.items()}

    def against_reference(models: dict[str, Any], rows: Samples) -> dict[str, Any]:
        preds = {name: p_up(models[name], design(rows, names)) for name, names in VARIANTS.items()}
        variants = {name: scored(rows, {"model": preds[name], "reference": preds["reference"]},
                                 data) for name in VARIANTS if name != "reference"}  # fmt: skip
        return {"first_target": iso(int(rows.target_ms.min())),
                "last_target": iso(int(rows.target_ms.max())),
                "rows": len(rows), "variants": variants}  # fmt: skip

    models = fitted(train)
    reference = direction_baselines(data, train, test, SEED)["logistic"]
    same = np.allclose(reference, p_up(models["reference"], design(test, ())))
    assert same, "the reference is not the trainer's logistic baseline"
    before_test = probe.take((probe.split == TRAIN) | (probe.split == VALIDATION))
    parts = {
        "test": against_reference(models, test),
        "validation": against_reference(models, validation),
        "test_refit": against_reference(fitted(before_test), test),
    }
    in_sample = {name: auc(train.y_up, p_up(models[name], design(train, names)))
                 for name, names in VARIANTS.items()}  # fmt: skip

    report = {
        "files": list(FILES),
        "cuts": cuts.as_dict(),
        "settings": {
            "test_days": TEST_DAYS,
            "purge_bars": PURGE_BARS,
            "window": WINDOW,
            "bootstrap_samples": BOOTSTRAP_SAMPLES,
            "block_hours": BLOCK_HOURS,
            "seed": SEED,
            "leader": LEADER,
            "min_market": MIN_MARKET,
        },
        "inputs": {name: list(names) for name, names in VARIANTS.items()},
        "trainer_rows": {
            "train": len(train_all),
            "test": len(test_all),
            "logistic": reproduced["pooled"]["models"]["model"],
        },
        "probe_rows": {
            "train": len(train),
            "test": len(test),
            "first_test_target": iso(int(test.target_ms.min())),
            "last_test_target": iso(int(test.target_ms.max())),
        },
        **parts,
        "train_auc_in_sample": in_sample,
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"trainer's rows: {len(train_all)} train, {len(test_all)} test; logistic AUC "
          f"{fmt(reproduced['pooled']['models']['model']['auc'])}")  # fmt: skip
    print(f"probe rows: {len(train)} train, {len(test)} test "
          f"({len(np.unique(test.target_ms // DAY_MS))} test days)\n")  # fmt: skip
    print(markdown(report))
    print(f"\n{report['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
