"""The benchmark runs end to end on tiny settings (no timing asserts: numbers are reported)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_e2e import E2EOptions, format_e2e
from benchmarks.bench_inference import (
    MIN_LAG_SAMPLES,
    BenchOptions,
    flops_per_sample,
    format_table,
    run_bench,
)
from testkit.models import deep_model
from whalecast import cli

pytestmark = [pytest.mark.tf, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def test_seed004_size_matches_the_measured_facts() -> None:
    model = deep_model(24, 30)
    assert model.count_params() == 134_337
    assert flops_per_sample(model) == pytest.approx(6.25e6, rel=0.01)


def test_sections_and_table() -> None:
    options = BenchOptions(sizes=(3, 9), backends=("keras", "tf-function"), repeats=1,
                           per_series_sample=2, matmul_size=128, buckets=(1, 8))  # fmt: skip
    sections = ["matmul", "backends", "incremental", "per_series", "loop_lag", "summary"]
    results = run_bench(options, sections=sections)
    assert set(results) == {"machine", *sections}
    assert set(results["backends"]["tf-function"]["median_ms"]) == {"3", "9"}
    assert set(results["incremental"]["step_ms"]) == set(results["incremental"]["prime_ms"]) == {"3", "9"}  # fmt: skip
    summary = results["summary"]
    assert summary["floor_ms_1000"] > 0 and "best_backend" not in summary  # no 1000-series batch
    assert summary["parameters"] == 133_825  # 29 features
    table = format_table(results)
    assert results["loop_lag"]["keras"]["series"] == 9
    lag = results["loop_lag"]["keras"]
    assert lag["samples"] >= MIN_LAG_SAMPLES and 0.0 <= lag["max_lag_ms"] < 60_000
    assert "tf-function" in table and "GFLOP/s" in table and "extrapolated" in table
    assert "step at bar" in table and "prime before" in table
    with pytest.raises(ValueError, match="unknown"):
        run_bench(BenchOptions(backends=("pytorch",)))
    with pytest.raises(ValueError, match="unknown"):
        run_bench(BenchOptions(e2e=E2EOptions(backend="pytorch")), sections=["e2e"])


@pytest.mark.slow
@pytest.mark.redis
def test_e2e_section_runs_the_daemon_against_the_simulator() -> None:
    opts = E2EOptions(series=4, bars=3, warmup_bars=1)
    results = run_bench(BenchOptions(e2e=opts), sections=["e2e"])
    e2e = results["e2e"]
    assert e2e["bars"] == 3 and e2e["models"] == ["direction-deep", "volume"]
    assert e2e["predictions_per_bar"] == {"direction-deep": 4, "volume": 4}
    assert e2e["latency_observations_per_bar"] == 1  # one batch per bar, none late
    assert 0 < e2e["latency_ms"]["p50"] <= e2e["latency_ms"]["max"]
    assert e2e["feed_ms"]["p50"] > 0  # the bar measured is the one the step closed
    assert all(v["p50"] > 0 for v in e2e["inference_ms"].values())
    assert e2e["stream_length"] >= 2 * 4 * (3 + 1)
    assert len(e2e["per_bar"]) == 3
    # the floor sends what a bar of 4 series and 2 models sends: 6 store commands a series;
    # a mark read and write a series, PUBLISH + XADD a prediction, one HSET a model
    floor = e2e["redis_floor"]
    assert floor["store_commands"] == 6 * 4
    assert floor["publish_commands"] == 2 * 4 + 2 * 4 * 2 + 2
    assert floor["store_ms"] > 0 and floor["publish_ms"] > 0
    assert e2e["floor_factor"]["both"] > 1  # our side can only add to Redis's own time
    table = format_table(results)
    assert "bar latency ms" in table and "event-loop lag during inference" in table
    assert "Redis floor" in table


def test_e2e_section_serves_a_model_of_six_outputs_beside_the_two() -> None:
    opts = E2EOptions(series=4, bars=2, warmup_bars=1, horizons=True)
    e2e = run_bench(BenchOptions(e2e=opts), sections=["e2e"])["e2e"]
    assert e2e["models"] == ["direction-deep", "volume", "volume-horizons"]
    # a bar ends once every output of every series is out: six messages a series
    assert e2e["predictions_per_bar"] == {"direction-deep": 4, "volume": 4, "volume-horizons": 24}
    assert e2e["latency_observations_per_bar"] == 1
    # the floor publishes what the bar did: eight messages a series (PUBLISH + XADD each),
    # a mark read and write a series, one latest-values HSET per eight-message group
    assert e2e["redis_floor"]["publish_commands"] == 2 * 4 + 8 * 4 * 2 + 8


@pytest.mark.slow
@pytest.mark.redis
def test_e2e_section_steps_a_simulator_in_its_own_process() -> None:
    opts = E2EOptions(series=4, bars=2, warmup_bars=1, sim_process=True)
    e2e = run_bench(BenchOptions(e2e=opts), sections=["e2e"])["e2e"]
    assert e2e["simulator"] == "own process"
    assert e2e["predictions_per_bar"] == {"direction-deep": 4, "volume": 4}
    assert e2e["latency_observations_per_bar"] == 1
    sent, feed, latency = e2e["sent_to_published_ms"], e2e["feed_ms"], e2e["latency_ms"]
    assert 0 < feed["p50"] < sent["p50"] and 0 < latency["p50"] < sent["p50"]
    assert "bar sent -> all published ms" in "\n".join(format_e2e(e2e))


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


@pytest.mark.slow
@pytest.mark.redis
def test_serve_benchmark_runs_the_daemon_as_its_own_process(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_serve", "--series", "3", "--bars", "1",
         "--backends", "onnx", "--limit", "240", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = json.loads(out.read_text())["runs"]
    assert run["frameworks"] == ["onnxruntime"]
    assert run["incremental"] == {"direction-deep": True, "volume": True}
    assert run["cpu_seconds_to_ready"] > 0 and run["start_to_ready_seconds"] > 0
    assert run["start_to_ready_seconds"] <= run["start_to_first_bar_published_seconds"]
    assert run["rss_at_ready_mib"] > 0 and run["rss_mib"] > 0
