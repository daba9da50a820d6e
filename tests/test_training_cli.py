"""``whalecast train`` and ``whalecast tune`` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from training.commands import ablated, refuse_with_quick
from training.params import groups_left_out
from whalecast.cli import PRESETS, build_parser
from whalecast.settings import PresetName, Settings

pytestmark = [pytest.mark.tf, pytest.mark.training]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "streamer" / "data"
SLICE = [str(DATA / "binance_BTC-USDT_1h.csv.gz"), str(DATA / "binance_ETH-USDT_1h.csv.gz")]


def config(tmp_path: Path, redis_url: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(
        f"log: {{format: json}}\n"
        f"redis: {{url: '{redis_url}'}}\n"
        f"inference: {{registry: {tmp_path / 'models'}}}\n"
        "training:\n"
        "  test_days: 10\n  train_days: 30\n  bootstrap_samples: 50\n"
        "  presets: {direction: {units: 4, patience: 0}, volume: {units: 4}}\n"
    )
    return path


def whalecast(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "whalecast", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def last_json(stdout: str) -> dict[str, object]:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def test_cli_presets_match_the_settings() -> None:
    assert set(PRESETS) == set(get_args(PresetName))


def test_tune_then_train_with_the_tuned_parameters(tmp_path: Path, redis_url: str) -> None:
    cfg = config(tmp_path, redis_url)
    best = tmp_path / "best.json"
    tuned = whalecast("tune", "-c", str(cfg), "--preset", "direction", "--candles", *SLICE,
                      "--trials", "2", "--epochs", "1", "--output", str(best))  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    result = json.loads(best.read_text())
    assert result["preset"] == "direction" and len(result["trials"]) == 2
    assert set(result["params"]) == {"units", "learning_rate", "dropout"}
    assert last_json(tuned.stdout)["best_params"] == result["params"]

    trained = whalecast("train", "-c", str(cfg), "--preset", "direction", "--candles", *SLICE,
                        "--params", str(best), "--epochs", "1", "--force")  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = last_json(trained.stdout)
    assert summary["promoted"] is True
    directory = Path(str(summary["directory"]))
    meta = json.loads((directory / "metadata.json").read_text())
    for key, value in result["params"].items():
        assert meta["hyper_parameters"][key] == value
    assert meta["hyper_parameters"]["epochs"] == 1
    assert (tmp_path / "models" / "direction" / "CURRENT").read_text().strip() == directory.name
    assert "auc=" in trained.stdout and "logistic" in trained.stdout


def test_bad_hyper_parameter_is_a_clear_error(tmp_path: Path, redis_url: str) -> None:
    result = whalecast("train", "-c", str(config(tmp_path, redis_url)), "--preset", "volume",
                       "--candles", *SLICE, "--set", "unitz=3")  # fmt: skip
    assert result.returncode != 0
    assert "no hyper-parameter 'unitz'" in result.stderr


def test_without_takes_input_groups_out_of_the_preset_features() -> None:
    args = build_parser().parse_args(
        ["train", "--preset", "volume-wide", "--without", "calendar", "--without", "memory"]
    )
    features = ablated(Settings(), "volume-wide", args)["features"]
    assert features == ["log_volume", "abs_ret_1", "range_rel", "vol_6", "vol_24", "atr_14_rel"]
    assert groups_left_out("volume-wide", features) == ["calendar", "memory"]


@pytest.mark.parametrize("extra", [["--preset", "direction-deep"], ["--no-promote"],
                                   ["--candles", "x.csv", "--every", "6h"], ["--epochs", "9"]])  # fmt: skip
def test_quick_names_the_flags_it_would_ignore(extra: list[str]) -> None:
    args = build_parser().parse_args(["train", "--quick", *extra])
    with pytest.raises(ValueError, match="--quick trains") as refused:
        refuse_with_quick(args)
    assert all(flag in str(refused.value) for flag in extra if flag.startswith("--"))
    refuse_with_quick(build_parser().parse_args(["train", "--quick", "--seed", "2", "--progress"]))
    refuse_with_quick(build_parser().parse_args(["train", *extra]))  # only with --quick
