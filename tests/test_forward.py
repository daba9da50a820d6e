"""The bar loop's forward passes: early passes used only when exact, never overlapping priming."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.forward import Batch, ForwardPasses
from inference.runtime import ModelRuntime
from streamer.features import FEATURE_NAMES
from testkit.models import preprocess_for, random_windows, small_model, write_model
from whalecast.domain import Series
from whalecast.metrics import Metrics

pytestmark = pytest.mark.tf

KEY = ("1h", 1_735_689_600_000)
SERIES = [Series("binance", f"S{i}/USDT", "1h") for i in range(6)]
POSITIONS = np.arange(len(SERIES))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("registry")
    model = small_model(24, len(FEATURE_NAMES), seed=5)
    return root, write_model(root, "direction", model, preprocess_for(FEATURE_NAMES))


class Spy:
    """Wraps one runtime method: counts calls and records when each ran (wall time)."""

    def __init__(self, runtime: Any, name: str, before: Callable[[], None] | None = None) -> None:
        self.calls: list[tuple[float, float]] = []
        self.before = before
        self.wrapped = getattr(runtime, name)
        setattr(runtime, name, self)

    def __call__(self, *args: Any) -> Any:
        started = time.monotonic()
        try:
            if self.before is not None:
                self.before()
            return self.wrapped(*args)
        finally:
            self.calls.append((started, time.monotonic()))


def load(registry: tuple[Path, str]) -> ModelRuntime:
    return ModelRuntime.load(registry[0], "direction", registry[1], "keras")


def early_count(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "whalecast_inference_early_passes_total", {"outcome": outcome}
    )
    return value or 0.0


async def test_an_early_pass_on_the_same_windows_is_used(registry: tuple[Path, str]) -> None:
    runtime, metrics = load(registry), Metrics(process=False)
    passes, spy = ForwardPasses(metrics), Spy(runtime, "predict_bar")
    windows = random_windows(len(SERIES), seed=1)
    passes.start_early(Batch(KEY, {"direction": runtime}, SERIES, windows, POSITIONS))
    results = await passes.run(
        Batch(KEY, {"direction": runtime}, SERIES, windows.copy(), POSITIONS)
    )
    assert len(spy.calls) == 1
    np.testing.assert_array_equal(results["direction"][0], runtime.predict(windows))
    assert early_count(metrics, "used") == 1 and early_count(metrics, "discarded") == 0


@pytest.mark.parametrize("change", ["window", "series", "runtime", "bar"])
async def test_an_early_pass_that_differs_in_anything_is_discarded_and_run_again(
    registry: tuple[Path, str], change: str
) -> None:
    runtime, metrics = load(registry), Metrics(process=False)
    passes, spy = ForwardPasses(metrics), Spy(runtime, "predict_bar")
    windows = random_windows(len(SERIES), seed=2)
    passes.start_early(Batch(KEY, {"direction": runtime}, SERIES, windows, POSITIONS))
    stored, series, runtimes, key = windows.copy(), list(SERIES), {"direction": runtime}, KEY
    if change == "window":  # Redis stored something else (a reload): one value differs
        stored[2, -1, 0] = np.nextafter(stored[2, -1, 0], np.float32(1e9))
    elif change == "series":
        series[0], series[1] = series[1], series[0]
    elif change == "runtime":  # a new version swapped in at the bar boundary
        runtimes = {"direction": load(registry)}
    else:
        key = (KEY[0], KEY[1] + 3_600_000)
    results = await passes.run(Batch(key, runtimes, series, stored, POSITIONS))
    await passes.settle()
    np.testing.assert_array_equal(results["direction"][0], runtimes["direction"].predict(stored))
    assert early_count(metrics, "used") == 0 and early_count(metrics, "discarded") == 1
    if change != "runtime":
        assert len(spy.calls) == 2


async def test_a_failed_early_pass_is_run_again(registry: tuple[Path, str]) -> None:
    runtime, metrics = load(registry), Metrics(process=False)
    failures = [RuntimeError("the early pass broke")]

    def fail_once() -> None:
        if failures:
            raise failures.pop()

    passes = ForwardPasses(metrics)
    Spy(runtime, "predict_bar", before=fail_once)
    windows = random_windows(len(SERIES), seed=3)
    passes.start_early(Batch(KEY, {"direction": runtime}, SERIES, windows, POSITIONS))
    results = await passes.run(Batch(KEY, {"direction": runtime}, SERIES, windows, POSITIONS))
    np.testing.assert_array_equal(results["direction"][0], runtime.predict(windows))
    assert early_count(metrics, "discarded") == 1


async def test_priming_and_passes_never_overlap(registry: tuple[Path, str]) -> None:
    runtime, metrics = load(registry), Metrics(process=False)
    passes = ForwardPasses(metrics)
    threads: set[int] = set()
    prime = Spy(runtime, "prime", before=lambda: (threads.add(threading.get_ident()), time.sleep(0.3)))  # fmt: skip
    predict = Spy(runtime, "predict_bar")
    before, now = random_windows(len(SERIES), 25, seed=4)[:, :-1], None
    passes.start_priming({"direction": runtime}, before, POSITIONS)
    now = random_windows(len(SERIES), seed=5)
    passes.start_early(Batch(KEY, {"direction": runtime}, SERIES, now, POSITIONS))
    await passes.run(Batch(KEY, {"direction": runtime}, SERIES, now, POSITIONS))
    await passes.settle()
    assert len(prime.calls) == 1 and len(predict.calls) == 1
    assert predict.calls[0][0] >= prime.calls[0][1]  # the pass waited for the priming
    assert threading.get_ident() not in threads  # priming ran in a worker thread
    assert metrics.registry.get_sample_value(
        "whalecast_inference_prime_seconds_count", {"model": "direction"}
    ) == 1  # fmt: skip
