"""The benchmark runs end to end on tiny settings (no timing asserts: numbers are reported)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inference.bench import BenchOptions, flops_per_sample, format_table, run_bench
from tests.model_artifacts import deep_model
from whalecast import cli

pytestmark = pytest.mark.tf
ROOT = Path(__file__).resolve().parents[1]


def test_seed004_size_matches_the_measured_facts() -> None:
    model = deep_model(24, 30)
    assert model.count_params() == 134_337
    assert flops_per_sample(model) == pytest.approx(6.25e6, rel=0.01)


def test_sections_and_table() -> None:
    options = BenchOptions(sizes=(3, 9), backends=("keras", "tf-function"), repeats=1,
                           per_series_sample=2, matmul_size=128, buckets=(1, 8))  # fmt: skip
    results = run_bench(options)
    assert set(results) == {"machine", "matmul", "backends", "per_series", "loop_lag", "summary"}
    assert set(results["backends"]["tf-function"]["median_ms"]) == {"3", "9"}
    summary = results["summary"]
    assert summary["floor_ms_1000"] > 0 and "best_backend" not in summary  # no 1000-series batch
    assert summary["parameters"] == 133_825  # 29 features
    table = format_table(results)
    assert results["loop_lag"]["keras"]["series"] == 9
    assert results["loop_lag"]["keras"]["samples"] >= 0
    assert "tf-function" in table and "GFLOP/s" in table and "extrapolated" in table
    with pytest.raises(ValueError, match="unknown"):
        run_bench(BenchOptions(backends=("pytorch",)))


@pytest.mark.slow
def test_cli_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "whalecast", "bench", "--sizes", "2", "--backends", "onnx",
         "--repeats", "1", "--per-series-sample", "1", "--matmul-size", "64",
         "--sections", "backends,summary", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "onnx" in result.stdout and "FLOP floor" in result.stdout
    data = json.loads(out.read_text())
    assert set(data["backends"]) == {"onnx"} and data["summary"]["parameters"] > 0


def test_cli_refuses_unknown_backends(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--backends", "pytorch"]) == 2
    assert "unknown" in capsys.readouterr().err
