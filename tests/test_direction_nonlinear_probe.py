"""The non-linear direction probe finds a planted non-linear signal that the trainer's
logistic cannot see, and finds nothing in noise.

Four synthetic series, read from candle files like the real ones. The direction of bar
``t + 1`` is the direction of bar ``t`` after a loud bar (volume above its median) and the
opposite after a quiet one, with probability ``P_FOLLOW``: an interaction of the last
return's sign with volume. Each on its own tells nothing (both are symmetric), so no linear
model over the reference's inputs can use it, while trees can.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from training.history import SeriesHistory, from_csv

pytestmark = pytest.mark.training

H = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01
BARS = 2_400  # 100 days of hours
TEST_DAYS = 24.0  # walk-forward: 4 windows of 6 days
P_FOLLOW = 0.8
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
PAIRS = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT")


@pytest.fixture(scope="module")
def nonlinear() -> ModuleType:
    path = SCRIPTS / "direction_nonlinear_probe.py"
    spec = importlib.util.spec_from_file_location("direction_nonlinear_probe", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def candles(rng: np.random.Generator, planted: bool) -> np.ndarray:
    """``(BARS, 6)``: open time, open, high, low, close, volume."""
    volume = rng.lognormal(3.0, 0.6, BARS)
    loud = volume > np.median(volume)
    sign = np.empty(BARS)
    sign[0] = 1.0
    for t in range(1, BARS):
        follow = rng.random() < (P_FOLLOW if planted else 0.5)
        rule = sign[t - 1] if loud[t - 1] else -sign[t - 1]
        sign[t] = rule if follow else -rule
    close = 100.0 * np.exp(np.cumsum(sign * rng.uniform(0.002, 0.01, BARS)))
    opened = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(opened, close) * 1.001
    low = np.minimum(opened, close) * 0.999
    return np.column_stack([T0 + np.arange(BARS) * H, opened, high, low, close, volume])


def histories(directory: Path, seed: int, planted: bool) -> list[SeriesHistory]:
    rng = np.random.default_rng(seed)
    paths = []
    for pair in PAIRS:
        path = directory / f"binance_{pair}_1h.csv"
        np.savetxt(path, candles(rng, planted), delimiter=",", fmt=["%d"] + ["%.8f"] * 5,
                   header="timestamp_ms,open,high,low,close,volume", comments="")  # fmt: skip
        paths.append(path)
    return from_csv(paths)


def probe(module: ModuleType, directory: Path, planted: bool) -> dict[str, Any]:
    report: dict[str, Any] = module.run(
        histories(directory, seed=5, planted=planted),
        variants={"trees": ()},
        test_days=TEST_DAYS,
        bootstrap_samples=200,
    )
    return report


def difference(part: dict[str, Any]) -> dict[str, Any]:
    paired: dict[str, Any] = part["variants"]["trees"]["pooled"]["paired"]["reference"]["auc"]
    return paired


def test_trees_find_a_planted_interaction_the_logistic_cannot_see(
    nonlinear: ModuleType, tmp_path: Path
) -> None:
    report = probe(nonlinear, tmp_path, planted=True)
    test = report["test"]["variants"]["trees"]["pooled"]["models"]
    assert test["reference"]["auc"]["value"] < 0.56  # the logistic sees (almost) nothing
    assert test["model"]["auc"]["value"] > 0.65
    assert difference(report["test"])["verdict"] == "better"
    assert difference(report["validation"])["verdict"] == "better"
    folds = report["walk_forward"]["folds"]
    assert len(folds) == 4
    assert all(difference(f)["verdict"] == "better" for f in folds)
    together = report["walk_forward"]["together"]
    assert together["rows"] == sum(f["rows"] for f in folds)
    assert difference(together)["verdict"] == "better"
    # the windows tile the last TEST_DAYS, the last one ending with the test year
    assert [f["test_to"] for f in folds[:-1]] == [f["test_from"] for f in folds[1:]]
    assert folds[-1]["last_target"] == report["test"]["last_target"]
    assert all(f["last_target"] < f["test_to"] for f in folds)
    assert report["trees"]["trees"] > nonlinear.STEP  # early stopping let it learn


def test_trees_find_nothing_in_noise(nonlinear: ModuleType, tmp_path: Path) -> None:
    report = probe(nonlinear, tmp_path, planted=False)
    trees = report["test"]["variants"]["trees"]["pooled"]["models"]["model"]["auc"]["value"]
    assert abs(trees - 0.5) < 0.04
    assert difference(report["test"])["verdict"] != "better"
    # a 95% interval clears zero by chance now and then: at most one window of four
    assert sum(difference(f)["verdict"] == "better" for f in report["walk_forward"]["folds"]) <= 1
