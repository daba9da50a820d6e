"""The training-throughput benchmark runs end to end on tiny settings (numbers reported only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.tf, pytest.mark.training]
ROOT = Path(__file__).resolve().parents[1]


def test_bench_training_reports_sequences_per_second() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_training", "--sequences", "256",
         "--batch-sizes", "128", "--epochs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["preset"] == "direction-deep"
    (row,) = summary["results"]
    assert row["batch_size"] == 128 and row["params"] == 133_825
    assert row["sequences_per_second_median"] > 0
