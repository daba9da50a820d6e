"""``whalecast bench``: what one bar's inference costs on this machine, measured in one run.

Sections (each a function of a :class:`BenchContext`, run in order, results
under its name; more can be registered in :data:`SECTIONS`):

- ``matmul``: the machine's float32 matrix-multiply rate (numpy, large square
  matrices, best of several) — the ceiling any forward pass works under;
- ``backends``: the seed-004 model (random weights; 24 rows x 29 v1 features)
  loaded through :class:`~inference.runtime.ModelRuntime` for each backend, and
  the median wall time of ``runtime.predict`` for each batch size after warm-up;
- ``incremental``: the same model and sizes served as the daemon serves a bar
  (:mod:`inference.incremental`): the median of one step per series from states
  primed on the previous bar's windows (the bar's critical path), and of that
  priming (between bars), with the default backend for series that do not step;
- ``per_series``: the same workload as one ``model.predict`` per series, timed
  on a sample of calls and extrapolated (the report says so);
- ``loop_lag``: the event loop's worst timer lag while 1000-series passes run
  in a worker thread (what the daemon's feeds feel during inference);
- ``summary``: the FLOP floor of the 1000-series batch and the targets: within
  2x of the floor, and at least 500x faster than one ``model.predict`` per series;
- ``e2e``: the real daemon against the simulator with 1000 series and two models,
  bar latency, inference, store and publish times, event-loop lag
  (:mod:`benchmarks.bench_e2e`); targets p50 <= 150 ms, p99 <= 300 ms, lag <= 20 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from benchmarks.bench_e2e import E2EOptions, format_e2e, run_e2e
from benchmarks.benchmodels import build_seed004_model, preprocess_for, write_model_artifact
from inference.backends import BACKENDS, usable_cores
from inference.looplag import LoopLagMonitor
from inference.runtime import DEFAULT_BUCKETS, ModelRuntime
from streamer.features import FEATURE_NAMES, SEED_FEATURES
from whalecast.metrics import Metrics

BENCH_MODEL = "bench-seed004"
FLOOR_SERIES = 1000
FLOOR_FACTOR_TARGET = 2.0
SPEEDUP_TARGET = 500.0
INCREMENTAL_BACKEND = "tf-function"  # the daemon's default


@dataclass
class BenchOptions:
    sizes: Sequence[int] = (10, 100, 1000, 5000)
    backends: Sequence[str] = BACKENDS
    repeats: int = 7
    per_series_sample: int = 20
    per_series_count: int = FLOOR_SERIES
    matmul_size: int = 2048
    buckets: Sequence[int] = DEFAULT_BUCKETS
    window: int = 24
    e2e: E2EOptions = field(default_factory=E2EOptions)


@dataclass
class BenchContext:
    options: BenchOptions
    workdir: Path
    results: dict[str, Any] = field(default_factory=dict)
    keras_model: Any = None
    version: str = ""
    runtimes: dict[str, ModelRuntime] = field(default_factory=dict)
    load_seconds: dict[str, float] = field(default_factory=dict)

    def runtime(self, backend: str) -> ModelRuntime:
        """The bench model loaded under ``backend`` (loaded once, load time kept)."""
        if backend not in self.runtimes:
            self.model()
            started = time.perf_counter()
            self.runtimes[backend] = ModelRuntime.load(
                self.workdir, BENCH_MODEL, self.version, backend,
                batch_buckets=self.options.buckets,
            )  # fmt: skip
            self.load_seconds[backend] = time.perf_counter() - started
        return self.runtimes[backend]

    def windows(self, n: int, seed: int = 1, rows: int | None = None) -> np.ndarray:
        """``n`` random feature windows of ``rows`` rows (default: the model's window)."""
        rng = np.random.default_rng(seed)
        shape = (n, rows or self.options.window, len(FEATURE_NAMES))
        return rng.standard_normal(shape).astype(np.float32)

    def model(self) -> Any:
        """The seed-004 model, built once and written as an artifact for the runtime."""
        if self.keras_model is None:
            self.keras_model = build_seed004_model(self.options.window, len(SEED_FEATURES))
            self.version = write_bench_artifact(self.workdir, self.keras_model, self.options.window)
        return self.keras_model


def flops_per_sample(model: Any) -> float:
    """Multiply-add FLOPs of one sample's forward pass through LSTM and Dense layers."""
    timesteps = int(model.inputs[0].shape[1])
    total = 0.0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "LSTM":
            kernel, recurrent = layer.cell.kernel.shape, layer.cell.recurrent_kernel.shape
            total += 2.0 * timesteps * (kernel[0] * kernel[1] + recurrent[0] * recurrent[1])
        elif kind == "Dense":
            rows, cols = layer.kernel.shape
            total += 2.0 * rows * cols
    return total


def write_bench_artifact(registry: Path, model: Any, window: int) -> str:
    preprocess = preprocess_for(SEED_FEATURES, window=window)
    return write_model_artifact(
        registry, BENCH_MODEL, model, preprocess, current=False, graphs=True
    )


def median_ms(call: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000.0


def bench_matmul(ctx: BenchContext) -> dict[str, Any]:
    size = ctx.options.matmul_size
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    np.matmul(a, b)
    best = min(_timed(lambda: np.matmul(a, b)) for _ in range(5))
    return {"size": size, "seconds": best, "gflops": 2.0 * size**3 / best / 1e9}


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def bench_backends(ctx: BenchContext) -> dict[str, Any]:
    opts = ctx.options
    windows = ctx.windows(max(opts.sizes))
    out: dict[str, Any] = {}
    for backend in opts.backends:
        runtime = ctx.runtime(backend)
        timings = {str(n): time_predict(runtime, windows[:n], opts.repeats) for n in opts.sizes}
        out[backend] = {"load_seconds": ctx.load_seconds[backend], "median_ms": timings}
    return out


def bench_incremental(ctx: BenchContext) -> dict[str, Any]:
    """Stepping each series from a primed state, and the priming, per batch size."""
    opts = ctx.options
    backend = INCREMENTAL_BACKEND if INCREMENTAL_BACKEND in opts.backends else opts.backends[0]
    runtime = ctx.runtime(backend)
    if runtime.incremental is None:
        return {"backend": backend, "off": runtime.incremental_off}
    history = ctx.windows(max(opts.sizes), seed=3, rows=opts.window + 1)  # two bars' windows
    step_ms, prime_ms = {}, {}
    for n in opts.sizes:
        before, now, positions = history[:n, :-1], history[:n, 1:], np.arange(n)
        prime_ms[str(n)] = median_ms(lambda: runtime.prime(before, positions), opts.repeats)  # noqa: B023
        if runtime.predict_bar(now, positions)[1] != n:
            raise RuntimeError("a primed series did not step")  # the bench would measure nothing
        step_ms[str(n)] = median_ms(lambda: runtime.predict_bar(now, positions), opts.repeats)  # noqa: B023
    return {"backend": backend, "step_ms": step_ms, "prime_ms": prime_ms}


MIN_LAG_SAMPLES = 5  # timer samples a lag figure rests on, at least


def bench_loop_lag(ctx: BenchContext) -> dict[str, Any]:
    """Event-loop lag while a forward pass (1000 series, or fewer if asked) runs in a thread."""
    n = min(FLOOR_SERIES, max(ctx.options.sizes))
    windows = ctx.windows(n)
    out: dict[str, Any] = {}
    for backend in ctx.options.backends:
        lag = asyncio.run(_lag_during(ctx.runtime(backend), windows, ctx.options.repeats))
        out[backend] = {"series": n, **lag}
    return out


async def _lag_during(runtime: ModelRuntime, windows: np.ndarray, repeats: int) -> dict[str, Any]:
    monitor = LoopLagMonitor(Metrics(process=False), interval_seconds=0.005)
    task = asyncio.create_task(monitor.run())
    await asyncio.to_thread(runtime.predict, windows)  # the worker thread's first call sets up
    await asyncio.sleep(0.05)
    monitor.reset()
    passes = 0  # a small batch passes quickly: go on until the loop was sampled enough
    while passes < repeats or monitor.samples < MIN_LAG_SAMPLES:
        await asyncio.to_thread(runtime.predict, windows)
        passes += 1
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return {"max_lag_ms": monitor.max_lag * 1000.0, "samples": monitor.samples}


def time_predict(runtime: ModelRuntime, windows: np.ndarray, repeats: int) -> float:
    return median_ms(lambda: runtime.predict(windows), repeats)


def bench_per_series(ctx: BenchContext) -> dict[str, Any]:
    model = ctx.model()
    opts = ctx.options
    rng = np.random.default_rng(2)
    sample = rng.standard_normal((opts.per_series_sample, opts.window, len(SEED_FEATURES)))
    sample = sample.astype(np.float32)
    model.predict(sample[:1], verbose=0)
    times = [_timed(lambda i=i: model.predict(sample[i : i + 1], verbose=0)) for i in range(len(sample))]  # type: ignore[misc]  # fmt: skip
    per_call = statistics.median(times)
    return {
        "sample_calls": len(times),
        "median_ms_per_call": per_call * 1000.0,
        "series": opts.per_series_count,
        "extrapolated_seconds": per_call * opts.per_series_count,
        "note": f"{len(times)} calls timed, total extrapolated to {opts.per_series_count} series",
    }


def bench_summary(ctx: BenchContext) -> dict[str, Any]:
    model = ctx.model()
    flops = flops_per_sample(model)
    if "matmul" not in ctx.results:
        ctx.results["matmul"] = bench_matmul(ctx)
    gflops = ctx.results["matmul"]["gflops"]
    floor_ms = flops * FLOOR_SERIES / (gflops * 1e9) * 1000.0
    summary: dict[str, Any] = {
        "flops_per_sample": flops, "parameters": int(model.count_params()),
        "floor_ms_1000": floor_ms,
    }  # fmt: skip
    batched = {
        name: result["median_ms"][str(FLOOR_SERIES)]
        for name, result in ctx.results.get("backends", {}).items()
        if str(FLOOR_SERIES) in result["median_ms"]
    }
    if batched:
        best = min(batched, key=lambda name: batched[name])
        summary.update({"best_backend": best, "best_ms_1000": batched[best]})
        summary["floor_factor"] = batched[best] / floor_ms
        summary["floor_target_met"] = summary["floor_factor"] <= FLOOR_FACTOR_TARGET
        per_series = ctx.results.get("per_series")
        if per_series and per_series["series"] == FLOOR_SERIES:
            speedup = per_series["extrapolated_seconds"] * 1000.0 / batched[best]
            summary.update({"speedup": speedup, "speedup_target_met": speedup >= SPEEDUP_TARGET})
    return summary


def bench_e2e(ctx: BenchContext) -> dict[str, Any]:
    workdir = ctx.workdir / "e2e"
    workdir.mkdir()
    return asyncio.run(run_e2e(ctx.options.e2e, workdir))


Section = Callable[[BenchContext], dict[str, Any]]

#: Sections in run order; ``summary`` reads the others' results.
SECTIONS: dict[str, Section] = {
    "matmul": bench_matmul,
    "backends": bench_backends,
    "incremental": bench_incremental,
    "per_series": bench_per_series,
    "loop_lag": bench_loop_lag,
    "summary": bench_summary,
    "e2e": bench_e2e,
}


def machine_info() -> dict[str, Any]:
    return {
        "cores": usable_cores(), "machine": platform.machine(), "python": platform.python_version(),
        "tensorflow": tf.__version__, "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "time": datetime.now(UTC).isoformat(timespec="seconds"), "pid": os.getpid(),
        "load_average_1m": os.getloadavg()[0],
    }  # fmt: skip


def run_bench(options: BenchOptions, sections: Sequence[str] | None = None) -> dict[str, Any]:
    chosen = chosen_sections(options, sections)
    with tempfile.TemporaryDirectory(prefix="whalecast-bench-") as tmp:
        ctx = BenchContext(options=options, workdir=Path(tmp))
        ctx.results["machine"] = machine_info()
        for name in chosen:
            ctx.results[name] = SECTIONS[name](ctx)
        return ctx.results


def chosen_sections(options: BenchOptions, sections: Sequence[str] | None) -> list[str]:
    """The sections to run, in order (all when None); ValueError naming unknown ones."""
    chosen = list(sections) if sections is not None else list(SECTIONS)
    unknown = [name for name in chosen if name not in SECTIONS]
    unknown += [name for name in options.backends if name not in BACKENDS]
    if "e2e" in chosen and options.e2e.backend not in BACKENDS:
        unknown.append(options.e2e.backend)
    if unknown:
        raise ValueError(
            f"unknown bench sections or backends {unknown}; sections: {', '.join(SECTIONS)}; "
            f"backends: {', '.join(BACKENDS)}"
        )
    return chosen


def format_table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    machine = results.get("machine", {})
    if machine:
        lines.append(
            f"{machine['cores']} cores, load average {machine['load_average_1m']:.1f} at start "
            f"(other processes skew every figure below), GPUs: {machine['gpus'] or 'none'}"
        )
    backends = results.get("backends", {})
    if backends:
        sizes = list(next(iter(backends.values()))["median_ms"])
        lines.append("batched forward pass, seed-004 model, median ms per call")
        lines.append(
            f"{'backend':<14}{'load s':>8}" + "".join(f"{s + ' series':>14}" for s in sizes)
        )
        for name, result in backends.items():
            cells = "".join(f"{result['median_ms'][s]:>14.2f}" for s in sizes)
            lines.append(f"{name:<14}{result['load_seconds']:>8.1f}{cells}")
    lines.extend(_incremental_lines(results.get("incremental", {})))
    if "per_series" in results:
        p = results["per_series"]
        lines.append(
            f"one model.predict per series: {p['median_ms_per_call']:.1f} ms per call; "
            f"{p['series']} series ~ {p['extrapolated_seconds']:.1f} s ({p['note']})"
        )
    if "loop_lag" in results:
        lags = ", ".join(f"{name} {r['max_lag_ms']:.1f}" for name, r in results["loop_lag"].items())
        lines.append(
            f"event-loop lag during a {FLOOR_SERIES}-series pass in a thread, max ms: {lags}"
        )
    if "matmul" in results:
        m = results["matmul"]
        lines.append(f"float32 matmul ({m['size']}x{m['size']}): {m['gflops']:.1f} GFLOP/s")
    lines.extend(_summary_lines(results.get("summary", {})))
    if "e2e" in results:
        lines.extend(format_e2e(results["e2e"]))
    return "\n".join(lines)


def _incremental_lines(r: dict[str, Any]) -> list[str]:
    if not r:
        return []
    if "off" in r:
        return [f"incremental steps ({r['backend']}): off, {r['off']}"]
    lines = [f"incremental ({r['backend']}), same model and sizes, median ms per call"]
    for label, values in (("step at bar", r["step_ms"]), ("prime before", r["prime_ms"])):
        lines.append(f"{label:<14}{'':>8}" + "".join(f"{v:>14.2f}" for v in values.values()))
    lines.append("  step: one row per series from its primed state (the bar's critical path);")
    lines.append("  prime: the older rows, run between bars")
    return lines


def _summary_lines(s: dict[str, Any]) -> list[str]:
    if not s:
        return []
    lines = [
        f"seed-004: {s['parameters']:,} parameters, {s['flops_per_sample'] / 1e6:.2f} MFLOP per "
        f"sample; FLOP floor for {FLOOR_SERIES} series: {s['floor_ms_1000']:.1f} ms"
    ]
    if "best_backend" in s:
        verdict = "met" if s["floor_target_met"] else "NOT met"
        lines.append(
            f"target <= {FLOOR_FACTOR_TARGET:g}x floor: {verdict} ({s['best_backend']} "
            f"{s['best_ms_1000']:.1f} ms = {s['floor_factor']:.2f}x floor)"
        )
    if "speedup" in s:
        verdict = "met" if s["speedup_target_met"] else "NOT met"
        lines.append(
            f"target >= {SPEEDUP_TARGET:g}x faster than per-series model.predict: {verdict} "
            f"({s['speedup']:.0f}x)"
        )
    return lines


def write_results(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
