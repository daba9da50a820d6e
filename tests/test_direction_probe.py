"""The direction inputs probe reads no bar after ``t``: changing later bars of any series
changes none of its inputs at ``t`` (the cross-asset ones included), while changing bar ``t``
changes every one."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from streamer.features import FEATURE_NAMES
from training.dataset import SeriesData
from whalecast.domain import Series

H = 3_600_000
T0 = 1_767_225_600_000
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "direction_inputs_probe.py"
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT")


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("direction_inputs_probe", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic(seed: int) -> list[SeriesData]:
    """Four random-walk series with different starts and ends, one with a gap."""
    rng = np.random.default_rng(seed)
    out = []
    for j, symbol in enumerate(SYMBOLS):
        start, bars = 20 * j, 700 - 15 * j
        close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, bars)))
        volume = rng.lognormal(3.0, 0.5, bars)
        if j == 2:
            close[250:253] = np.nan
            volume[250:253] = np.nan
        out.append(SeriesData(Series("binance", symbol, "1h"),
                              T0 + (start + np.arange(bars, dtype=np.int64)) * H, close, volume,
                              np.zeros((bars, len(FEATURE_NAMES)))))  # fmt: skip
    return out


def changed_after(
    data: list[SeriesData], t_ms: int, seed: int, at_t: bool = False
) -> list[SeriesData]:
    """A copy with every series' bars after ``t_ms`` (or bar ``t_ms`` itself) redrawn."""
    rng = np.random.default_rng(seed)
    out = []
    for d in data:
        hit = d.open_ms == t_ms if at_t else d.open_ms > t_ms
        close, volume = d.close.copy(), d.volume.copy()
        close[hit] *= rng.uniform(0.5, 2.0, hit.sum())
        volume[hit] *= rng.uniform(0.1, 10.0, hit.sum())
        out.append(SeriesData(d.series, d.open_ms, close, volume, d.features))
    return out


def inputs_of(probe: ModuleType, data: list[SeriesData]) -> tuple[int, dict[str, np.ndarray]]:
    first, close, volume = probe.aligned(data)
    return first, probe.new_inputs(close, volume, leader=0)


@pytest.mark.parametrize("t_row", [260, 400, 560])
def test_later_bars_change_no_input_at_t(probe: ModuleType, t_row: int) -> None:
    data = synthetic(seed=t_row)
    first, before = inputs_of(probe, data)
    t_ms = first + t_row * H
    _, after = inputs_of(probe, changed_after(data, t_ms, seed=1))
    assert set(before) == set(probe.CROSS + probe.REGIME)
    for name in before:
        assert np.isfinite(before[name][t_row]).any(), f"{name} undefined at t: the test is void"
        np.testing.assert_array_equal(after[name][: t_row + 1], before[name][: t_row + 1],
                                      err_msg=name)  # fmt: skip
        assert not np.array_equal(after[name], before[name], equal_nan=True), name


def test_bar_t_changes_every_input_at_t(probe: ModuleType) -> None:
    data = synthetic(seed=7)
    first, before = inputs_of(probe, data)
    t_row = 400
    _, after = inputs_of(probe, changed_after(data, first + t_row * H, seed=2, at_t=True))
    for name in before:
        assert not np.allclose(after[name][t_row], before[name][t_row], equal_nan=True), name
        np.testing.assert_array_equal(after[name][:t_row], before[name][:t_row], err_msg=name)


def test_market_needs_two_series_and_follows_the_grid(probe: ModuleType) -> None:
    data = synthetic(seed=3)
    first, close, _ = probe.aligned(data)
    assert first == T0
    for j, d in enumerate(data):
        rows = (d.open_ms - first) // H
        np.testing.assert_array_equal(close[rows, j], d.close)
    inputs = probe.new_inputs(close, np.ones_like(close), leader=0)
    # before the second series starts (row 20) only BTC has bars: no market
    assert np.isnan(inputs["mkt_ret_1"][:21]).all()
    assert np.isfinite(inputs["mkt_ret_1"][22:600]).all()
    btc = np.log(close[:, 0])
    np.testing.assert_allclose(inputs["btc_ret_3"][300, 3], btc[300] - btc[297])
