"""Feature list v1: definitions, the gap rule, online == offline, and properties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.features import (
    BAR_COLUMNS,
    FEATURE_NAMES,
    FEATURE_VERSION,
    HISTORY_BARS,
    SEED_FEATURES,
    compute_features,
    feature_rows,
    latest_features,
)
from streamer.history import bar_table, load_candles_csv, load_whale_flows_csv

DATA = Path(__file__).resolve().parents[1] / "streamer" / "data"
HOUR = 3_600_000
CONTRACT_NAMES = (
    "ret_1", "ret_3", "ret_6", "ret_24", "range_rel", "body_rel", "upper_wick_rel",
    "lower_wick_rel", "vol_6", "vol_24", "log_volume", "volume_z_24", "volume_ratio_6_24",
    "log_dollar_volume", "rsi_14", "close_vs_sma_24", "atr_14_rel", "whale_inflow_log",
    "whale_outflow_log", "whale_inflow_sum_6", "whale_inflow_sum_24", "whale_outflow_max_3",
    "whale_count_12", "whale_netflow_6", "stable_inflow_6", "hour_sin", "hour_cos",
    "dow_sin", "dow_cos",
    # appended: volume memory and the daily profile's harmonics
    "abs_ret_1", "log_volume_mean_6", "log_volume_mean_24", "hour_sin_2", "hour_cos_2",
    "hour_sin_3", "hour_cos_3", "hour_sin_4", "hour_cos_4",
)  # fmt: skip


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    candles = load_candles_csv(DATA / "binance_BTC-USDT_1h.csv.gz")
    whale = load_whale_flows_csv(DATA / "whalealert_BTC_exchange_flows_1h.csv.gz")
    return bar_table(candles, whale, "1h").iloc[:1500].reset_index(drop=True)


def test_contract_names_and_shape(btc: pd.DataFrame) -> None:
    assert FEATURE_VERSION == 1
    assert FEATURE_NAMES == CONTRACT_NAMES
    assert CONTRACT_NAMES[:29] == SEED_FEATURES  # what the seed presets read, unchanged
    assert HISTORY_BARS == 25
    features = compute_features(btc, "1h")
    assert list(features.columns) == list(FEATURE_NAMES)
    assert (features.dtypes == np.float64).all()
    assert features.index.equals(btc.index)
    assert features.iloc[HISTORY_BARS - 1 :].notna().all().all()
    assert features.iloc[: HISTORY_BARS - 1].isna().any(axis=1).all()


def test_definitions_by_hand(btc: pd.DataFrame) -> None:
    features = compute_features(btc, "1h")
    i = 600
    c, v = btc["close"], btc["volume"]
    assert features.at[i, "ret_24"] == pytest.approx(np.log(c[i] / c[i - 24]), abs=1e-12)
    r = np.log(c / c.shift(1))
    assert features.at[i, "vol_6"] == pytest.approx(r[i - 5 : i + 1].std(ddof=1), rel=1e-9)
    d = c.diff()[i - 13 : i + 1]
    gain, loss = d.clip(lower=0).mean(), (-d).clip(lower=0).mean()
    assert features.at[i, "rsi_14"] == pytest.approx(100 * gain / (gain + loss), rel=1e-9)
    assert features.at[i, "volume_ratio_6_24"] == pytest.approx(
        v[i - 5 : i + 1].mean() / v[i - 23 : i + 1].mean(), rel=1e-9
    )
    inflow, outflow = btc["whale_inflow_usd"], btc["whale_outflow_usd"]
    net = outflow[i - 5 : i + 1].sum() - inflow[i - 5 : i + 1].sum()
    expected = np.sign(net) * np.log1p(abs(net))
    assert features.at[i, "whale_netflow_6"] == pytest.approx(expected, rel=1e-12)
    assert features.at[i, "whale_count_12"] == btc["whale_count"][i - 11 : i + 1].sum()
    assert features.at[i, "abs_ret_1"] == pytest.approx(abs(np.log(c[i] / c[i - 1])), rel=1e-12)
    log_v = np.log1p(v)
    for n in (6, 24):
        expected = log_v[i - n + 1 : i + 1].mean()
        assert features.at[i, f"log_volume_mean_{n}"] == pytest.approx(expected, rel=1e-12)


def test_calendar_is_utc_hour_and_monday_first() -> None:
    # 2025-01-06 is a Monday; 06:00 UTC is a quarter of the day.
    monday_6am = int(pd.Timestamp("2025-01-06 06:00", tz="UTC").value // 1_000_000)
    row = latest_features(_flat_bars(monday_6am, HISTORY_BARS), "1h")
    named = dict(zip(FEATURE_NAMES, row, strict=True))
    assert named["hour_sin"] == pytest.approx(1.0)
    assert named["hour_cos"] == pytest.approx(0.0, abs=1e-12)
    assert named["dow_sin"] == pytest.approx(0.0, abs=1e-12)
    assert named["dow_cos"] == pytest.approx(1.0)
    # harmonics of 06:00 (a quarter turn): k quarter turns
    assert named["hour_sin_2"] == pytest.approx(0.0, abs=1e-12)
    assert named["hour_cos_2"] == pytest.approx(-1.0)
    assert named["hour_sin_3"] == pytest.approx(-1.0)
    assert named["hour_cos_4"] == pytest.approx(1.0)
    # flat prices: no movement gives RSI 50, zero volume z-score, ratio 1
    assert named["rsi_14"] == 50.0
    assert named["volume_z_24"] == 0.0
    assert named["volume_ratio_6_24"] == 1.0


def _flat_bars(last_open_ms: int, n: int, volume: float = 0.0) -> np.ndarray:
    bars = np.zeros((n, len(BAR_COLUMNS)))
    bars[:, 0] = last_open_ms - HOUR * np.arange(n - 1, -1, -1)
    bars[:, 1:5] = 100.0
    bars[:, 5] = volume
    return bars


def test_online_equals_offline_on_every_row(btc: pd.DataFrame) -> None:
    offline = compute_features(btc, "1h").to_numpy()
    for i in range(HISTORY_BARS - 1, len(btc), 7):
        online = latest_features(btc.iloc[max(0, i - 40) : i + 1], "1h")
        np.testing.assert_array_equal(online, offline[i])


def test_gap_rule_nan_exactly_where_the_lookback_touches_a_missing_bar(btc: pd.DataFrame) -> None:
    full = compute_features(btc, "1h")
    gap_at = 700
    holed = btc.drop(index=[gap_at])  # the bar is absent from the input
    with_gap = compute_features(holed, "1h")
    assert with_gap.index.equals(holed.index)
    lookback = {name: _lookback_of(name) for name in FEATURE_NAMES}
    for name in FEATURE_NAMES:
        touched = [i for i in holed.index if gap_at <= i < gap_at + lookback[name]]
        clean = [i for i in holed.index if i >= HISTORY_BARS - 1 and i not in touched]
        assert with_gap.loc[touched, name].isna().all(), name
        np.testing.assert_array_equal(with_gap.loc[clean, name], full.loc[clean, name])
    # a NaN row in the table means the same as an absent row
    nan_row = btc.copy()
    nan_row.loc[gap_at, list(BAR_COLUMNS[1:])] = np.nan
    pd.testing.assert_frame_equal(compute_features(nan_row, "1h").drop(index=gap_at), with_gap)
    # online, across the gap: the same NaNs and the same numbers
    for i in range(gap_at + 1, gap_at + 30):
        online = latest_features(holed.loc[i - 30 : i], "1h")
        np.testing.assert_array_equal(online, with_gap.loc[i].to_numpy())


def _lookback_of(name: str) -> int:
    """Recover a feature's lookback by probing: the first row after a gap where it is defined."""
    bars = _flat_bars(100 * HOUR, 60, volume=1.0)
    bars[10, 1:] = np.nan
    values = feature_rows(bars[np.newaxis], rows=60)[0, :, FEATURE_NAMES.index(name)]
    return int(np.argmax(~np.isnan(values[10:])))


def test_bad_tables_are_refused(btc: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        compute_features(btc.iloc[::-1], "1h")
    shifted = btc.assign(open_ms=btc["open_ms"] + 1)
    with pytest.raises(ValueError, match="off the 1h grid"):
        compute_features(shifted, "1h")
    with pytest.raises(ValueError, match="rows must be"):
        feature_rows(btc.to_numpy()[np.newaxis], rows=0)


@st.composite
def valid_bars(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(HISTORY_BARS, 70))
    floats = st.floats
    steps = draw(st.lists(floats(-0.2, 0.2), min_size=n, max_size=n))
    close = 50.0 * np.exp(np.cumsum(steps))
    opens = close * np.exp(draw(st.lists(floats(-0.1, 0.1), min_size=n, max_size=n)))
    up = np.exp(draw(st.lists(floats(0.0, 0.1), min_size=n, max_size=n)))
    down = np.exp(-np.array(draw(st.lists(floats(0.0, 0.1), min_size=n, max_size=n))))
    bars = np.zeros((n, len(BAR_COLUMNS)))
    start = draw(st.integers(0, 500_000)) * HOUR
    bars[:, 0] = start + HOUR * np.arange(n)
    bars[:, 1] = opens
    bars[:, 2] = np.maximum(opens, close) * up
    bars[:, 3] = np.minimum(opens, close) * down
    bars[:, 4] = close
    usd = floats(0.0, 1e11)
    for col in (5, 6, 7, 9):
        bars[:, col] = draw(st.lists(usd | st.just(0.0), min_size=n, max_size=n))
    bars[:, 8] = draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))
    return bars


def _frame(bars: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(bars, columns=list(BAR_COLUMNS)).astype({"open_ms": "int64"})


@settings(max_examples=100, deadline=None)
@given(valid_bars())
def test_finite_for_any_valid_bars_with_enough_history(bars: np.ndarray) -> None:
    features = compute_features(_frame(bars), "1h").to_numpy()
    assert np.isfinite(features[HISTORY_BARS - 1 :]).all()


@settings(max_examples=100, deadline=None)
@given(valid_bars(), st.data())
def test_no_look_ahead(bars: np.ndarray, data: st.DataObject) -> None:
    cut = data.draw(st.integers(1, len(bars)))
    full = compute_features(_frame(bars), "1h").to_numpy()
    prefix = compute_features(_frame(bars[:cut]), "1h").to_numpy()
    np.testing.assert_array_equal(prefix, full[:cut])
    np.testing.assert_array_equal(latest_features(bars[:cut], "1h"), full[cut - 1])
