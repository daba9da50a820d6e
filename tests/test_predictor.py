"""The Predictor: a bar's versions, the early pass, priming and heap freezing, each switchable."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.completion import Take
from inference.models import ModelSet
from inference.predictor import Predictor
from streamer.features import FEATURE_NAMES
from testkit.models import preprocess_for, random_windows, small_model, write_model
from whalecast.domain import Candle, Series
from whalecast.metrics import Metrics
from whalecast.settings import InferenceSettings

pytestmark = pytest.mark.tf

H = 3_600_000
KEY = ("1h", 1_735_689_600_000)
SERIES = [Series("binance", f"S{i}/USDT", "1h") for i in range(4)]


def write(registry: Path, seed: int) -> str:
    model = small_model(24, len(FEATURE_NAMES), seed=seed)
    return write_model(registry, "direction", model, preprocess_for(FEATURE_NAMES))


def take(key: tuple[str, int] = KEY, series: list[Series] = SERIES, late: bool = False) -> Take:
    candles = {s: Candle(s.exchange, s.symbol, s.timeframe, key[1], 1.0, 1.0, 1.0, 1.0, 1.0, True)
               for s in series}  # fmt: skip
    return Take(key, list(series), late, candles, dict.fromkeys(series, 7.0))


def count(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def predictor(registry: Path, **switches: Any) -> tuple[Predictor, Metrics]:
    metrics = Metrics(process=False)
    settings = InferenceSettings(models=["direction"], backend="keras", batch_buckets=[1, 8])
    models = ModelSet(settings, metrics, registry=registry)
    chosen = Predictor(models, SERIES, metrics, **{"freeze": False, **switches})
    await chosen.load()
    return chosen, metrics


async def test_a_bar_is_predicted_from_its_ready_windows_with_the_early_pass(
    tmp_path: Path,
) -> None:
    version = write(tmp_path, seed=1)
    p, metrics = await predictor(tmp_path)
    windows = random_windows(len(SERIES), seed=2)
    windows[1, 0, 0] = np.nan  # an incomplete window: never predicted from padding
    ready = np.isfinite(windows).all(axis=(1, 2))
    p.start_early(KEY, list(reversed(SERIES)), windows[::-1].copy())  # any order in
    out = await p.predict(take(), windows, ready)
    await p.settle()
    expected = p.models.serving()["direction"].predict(windows[ready])[:, 0]  # type: ignore[attr-defined]
    assert out.series == [SERIES[0], SERIES[2], SERIES[3]]
    np.testing.assert_array_equal([o.value for o in out.outputs], expected)
    assert {(o.model_version, o.bar_open_ms, o.known_at) for o in out.outputs} == {
        (version, KEY[1], 7.0)
    }
    early = "whalecast_inference_early_passes_total"
    assert count(metrics, early, {"outcome": "used"}) == 1


async def test_switched_off_there_is_no_early_pass_and_no_priming(tmp_path: Path) -> None:
    write(tmp_path, seed=1)
    p, metrics = await predictor(tmp_path, early_pass=False, priming=False)
    windows = random_windows(len(SERIES), seed=3)
    ready = np.ones(len(SERIES), dtype=bool)
    p.start_early(KEY, SERIES, windows)
    out = await p.predict(take(), windows, ready)
    p.prime_after(take(), windows, ready)
    p.prime(SERIES, windows, ready)
    await p.settle()
    assert len(out.outputs) == len(SERIES)
    assert count(metrics, "whalecast_inference_early_passes_total", {"outcome": "used"}) == 0
    assert count(metrics, "whalecast_inference_prime_seconds_count", {"model": "direction"}) == 0
    step = {"model": "direction", "path": "step"}
    assert count(metrics, "whalecast_inference_series_total", step) == 0


async def test_primed_series_step_at_the_next_bar(tmp_path: Path) -> None:
    write(tmp_path, seed=1)
    p, metrics = await predictor(tmp_path)
    windows = random_windows(len(SERIES), 25, seed=4)
    ready = np.ones(len(SERIES), dtype=bool)
    p.prime(SERIES, windows[:, :-1], ready)  # start-up: from the windows held
    await p.settle()
    nxt = (KEY[0], KEY[1] + H)
    out = await p.predict(take(nxt), windows[:, 1:], ready)
    assert len(out.outputs) == len(SERIES)
    assert count(metrics, "whalecast_inference_prime_seconds_count", {"model": "direction"}) == 1
    step = {"model": "direction", "path": "step"}
    assert count(metrics, "whalecast_inference_series_total", step) == len(SERIES)


async def test_a_late_batch_uses_its_bar_versions_and_a_new_bar_swaps(tmp_path: Path) -> None:
    first = write(tmp_path, seed=1)
    p, _ = await predictor(tmp_path)
    windows = random_windows(2, seed=5)
    ready = np.ones(2, dtype=bool)
    main = await p.predict(take(series=SERIES[:2]), windows, ready)
    second = write(tmp_path, seed=2)
    await p.models.check("direction")  # type: ignore[attr-defined]  # parked for the next bar
    late = await p.predict(take(series=SERIES[2:], late=True), windows, ready)
    nxt = await p.predict(take((KEY[0], KEY[1] + H), SERIES[:2]), windows, ready)
    assert {o.model_version for o in main.outputs + late.outputs} == {first}
    assert {o.model_version for o in nxt.outputs} == {second}
    p.forget([KEY])  # its state is gone: a batch of it now would take the new version


async def test_the_heap_is_frozen_once_the_models_are_loaded_unless_switched_off(
    tmp_path: Path,
) -> None:
    write(tmp_path, seed=1)
    try:
        await predictor(tmp_path, freeze=False)
        assert gc.get_freeze_count() == 0
        await predictor(tmp_path, freeze=True)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
