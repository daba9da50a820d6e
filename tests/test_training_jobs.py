"""Parallel trainers: ``training.jobs`` entries picked by index, each promoting its own model.

The last test runs two ``whalecast train`` processes at once, one picking its entry with
``--job``, the other with ``WHALECAST_TRAINING__JOB_INDEX`` (what a Kubernetes Indexed
Job sets from the pod's completion index).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_training_cli import ROOT, SLICE
from tests.test_training_cli import config as write_config
from training.jobs import Selection, narrowed, select
from whalecast.settings import ConfigError, load_settings

JOBS = [
    {"preset": "direction", "name": "direction-btc", "symbols": ["BTC/USDT"]},
    {"preset": "volume", "name": "volume-eth", "symbols": ["ETH/USDT"]},
    {"preset": "direction"},
]


def test_an_index_picks_an_entry_and_flags_pick_otherwise() -> None:
    training = load_settings(None, training={"jobs": JOBS}).training
    assert select(training, 1, None, None) == Selection("volume", "volume-eth", ("ETH/USDT",))
    assert select(training, 2, None, None) == Selection("direction", "direction")
    assert select(training, None, "volume", "v2") == Selection("volume", "v2")
    from_env = training.model_copy(update={"job_index": 0})
    assert select(from_env, None, None, None).model_name == "direction-btc"
    assert select(from_env, 2, None, None).model_name == "direction"  # the flag wins
    with pytest.raises(ValueError, match=r"outside training\.jobs"):
        select(training, 3, None, None)
    with pytest.raises(ValueError, match="cannot be combined"):
        select(training, 0, "volume", None)


def test_jobs_writing_one_model_are_refused() -> None:
    with pytest.raises(ConfigError, match="two jobs write the same model"):
        load_settings(None, training={"jobs": [{"preset": "volume"}, {"preset": "volume"}]})


def test_a_series_group_narrows_the_exchanges() -> None:
    settings = load_settings(
        None, exchanges=[{"id": "binance", "symbols": ["BTC/USDT", "ETH/USDT"]},
                         {"id": "kraken", "symbols": ["SOL/USD"]}],
    )  # fmt: skip
    only = narrowed(settings, ("ETH/USDT",))
    assert [(e.id, e.symbols) for e in only.exchanges] == [("binance", ["ETH/USDT"])]
    assert narrowed(settings, ()) is settings
    with pytest.raises(ValueError, match="DOGE/USDT"):
        narrowed(settings, ("DOGE/USDT",))


@pytest.mark.tf
@pytest.mark.slow
def test_two_jobs_train_in_parallel_and_promote_their_own_models(
    tmp_path: Path, redis_url: str
) -> None:
    config = write_config(tmp_path, redis_url)
    with config.open("a") as extra:
        extra.write(f"  jobs: {json.dumps(JOBS)}\n")
    args = ["train", "-c", str(config), "--candles", *SLICE, "--epochs", "1", "--force"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    jobs = [
        subprocess.Popen([sys.executable, "-m", "whalecast", *args, "--job", "0"], cwd=ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        subprocess.Popen([sys.executable, "-m", "whalecast", *args], cwd=ROOT,
                         env={**env, "WHALECAST_TRAINING__JOB_INDEX": "1"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    ]  # fmt: skip
    outputs = [job.communicate(timeout=300) for job in jobs]
    for job, (_out, err) in zip(jobs, outputs, strict=True):
        assert job.returncode == 0, err[-3000:]
    for (out, _err), (model, symbol) in zip(
        outputs, [("direction-btc", "BTC/USDT"), ("volume-eth", "ETH/USDT")], strict=True
    ):
        summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
        assert summary["model"] == model and summary["promoted"] is True
        current = (tmp_path / "models" / model / "CURRENT").read_text().strip()
        assert current == summary["version"]
        meta = json.loads((Path(summary["directory"]) / "metadata.json").read_text())
        assert [s["series"] for s in meta["data"]["series"]] == [f"binance:{symbol}:1h"]


def test_a_bad_job_index_is_a_clear_error_before_any_training(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(f"training: {{jobs: {json.dumps(JOBS)}}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "whalecast", "train", "-c", str(config), "--job", "3",
         "--candles", *SLICE],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "job index 3 is outside training.jobs (it has 3 entries)" in result.stderr
