"""Walk-forward evaluation: consecutive test windows, each fold fitted only on its past,
nothing written to the registry; and ``whalecast train --walk-forward`` as a user runs it."""

# ruff: noqa: F401 - the histories and settings fixtures come from tests.training_helpers

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tests.test_training_cli import SLICE, config, last_json, whalecast
from tests.training_helpers import histories_fixture, settings_fixture
from training.dataset import DAY_MS
from training.folds import fold_ends
from training.history import SeriesHistory
from training.jobs import make_job
from training.summary import walk_forward_table
from training.walkforward import run, truncated
from whalecast.settings import Settings

pytestmark = [pytest.mark.tf, pytest.mark.training]


def test_fold_ends_are_consecutive_and_the_last_ends_after_the_data(
    histories: list[SeriesHistory],
) -> None:
    bar_ms = histories[0].series.bar_ms
    ends = fold_ends(histories, 4, 2.5)
    assert ends[-1] == min(h.last_ms for h in histories) + bar_ms
    steps = {b - a for a, b in itertools.pairwise(ends)}
    assert steps == {int(2.5 * DAY_MS) // bar_ms * bar_ms}
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_ends(histories, 1, 5)


def test_a_fold_reads_nothing_from_its_future(histories: list[SeriesHistory]) -> None:
    end = fold_ends(histories, 3, 3)[0]
    cut = truncated(histories, end)
    for before, after in zip(histories, cut, strict=True):
        assert int(after.bars["open_ms"].max()) < end
        assert len(after.bars) == int((before.bars["open_ms"] < end).sum()) > 0
        assert after.last_ms == end - before.series.bar_ms


def test_walk_forward_refits_each_fold_on_its_past(
    histories: list[SeriesHistory], settings: Settings, tmp_path: Path
) -> None:
    job = make_job(settings, "direction", registry=tmp_path / "models")
    report = run(settings, job, histories, folds=3, fold_days=3)
    folds = report["folds"]
    assert len(folds) == 3 and report["fold_days"] == 3
    for fold, following in itertools.pairwise(folds):
        assert fold["test_to"] == following["test_from"]  # the windows tile, no overlap
    for fold in folds:
        assert fold["train_from"] < fold["test_from"] < fold["test_to"]
        assert fold["metric"] == "auc" and fold["samples"] == len(histories) * 3 * 24
        assert {"model", "logistic", "majority"} <= set(fold["models"])
        assert fold["vs_reference"]["verdict"] in {"better", "worse", "no difference"}
        assert fold["epochs_run"]["direction"] >= 1
        assert "strategy" in fold["backtest"]
    summary = report["summary"]
    assert summary["reference"] == "logistic" and sum(summary["record"].values()) == 3
    mean_auc = sum(f["models"]["model"]["value"] for f in folds) / 3
    assert summary["mean"]["model"] == pytest.approx(mean_auc)
    assert not (tmp_path / "models").exists()  # an evaluation: nothing written, nothing promoted
    table = walk_forward_table(report)  # the results page's rendering of it
    assert table.count("\n| 2") == 3 and "| model − logistic (paired) |" in table
    assert f"folds: {summary['record']['better']} better" in table


def test_registry_ensemble_is_refused(
    histories: list[SeriesHistory], settings: Settings, tmp_path: Path
) -> None:
    job = make_job(settings, "ensemble", registry=tmp_path, extra={"member_versions": ["a/1"]})
    with pytest.raises(ValueError, match="cannot be refitted"):
        run(settings, job, histories, folds=2, fold_days=2)


def test_cli_walk_forward_writes_its_report(tmp_path: Path, redis_url: str) -> None:
    out = tmp_path / "wf.json"
    result = whalecast("train", "-c", str(config(tmp_path, redis_url)), "--preset", "volume",
                       "--candles", *SLICE, "--epochs", "1", "--walk-forward", "2",
                       "--fold-days", "4", "--output", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert len(report["folds"]) == 2 and report["summary"]["reference"] == "ridge"
    assert last_json(result.stdout) == {"model": "volume", "walk_forward": 2,
                                        "written_to": str(out)}  # fmt: skip
    assert "walk-forward volume: 2 folds of 4 days, mae" in result.stdout
    assert not (tmp_path / "models").exists()
