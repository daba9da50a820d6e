"""Training datasets on the shipped real slice: no look-ahead, purged splits, train-only scaler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamer.features import FEATURE_NAMES, HISTORY_BARS
from streamer.whale_rule import WhaleRule
from training.dataset import (
    TEST,
    TRAIN,
    VALIDATION,
    DatasetError,
    build_samples,
    feature_index,
    fit_scaler,
    inert,
    make_cuts,
    prepare,
    windows,
)
from training.history import SeriesHistory, from_csv

DATA = Path(__file__).resolve().parents[1] / "streamer" / "data"
HOUR = 3_600_000
WINDOW = 24


@pytest.fixture(scope="module")
def histories() -> list[SeriesHistory]:
    return from_csv(
        [DATA / "binance_BTC-USDT_1h.csv.gz", DATA / "binance_XRP-USDT_1h.csv.gz"],
        [DATA / "whalealert_BTC_exchange_flows_1h.csv.gz"],
    )


def cut_history(h: SeriesHistory, bars: pd.DataFrame) -> SeriesHistory:
    return SeriesHistory(h.series, bars.reset_index(drop=True), h.source)


def test_series_come_from_file_names_and_whale_flows_join_by_asset(
    histories: list[SeriesHistory],
) -> None:
    btc, xrp = histories
    assert btc.series.tag == "binance:BTC/USDT:1h" and xrp.series.tag == "binance:XRP/USDT:1h"
    assert btc.bars["whale_inflow_usd"].sum() > 0
    assert xrp.bars["whale_inflow_usd"].sum() == 0  # no XRP flows: zeros, not BTC's


def test_targets_are_the_bar_after_the_window(histories: list[SeriesHistory]) -> None:
    data = prepare(histories)
    cuts = make_cuts(data, test_days=30, validation_fraction=0.2, train_days=None, purge_bars=24)
    samples = build_samples(data, WINDOW, cuts)
    for i, d in enumerate(data):
        mine = samples.take(samples.series == i)
        assert np.array_equal(mine.target_ms, d.open_ms[mine.row] + HOUR)
        assert np.array_equal(mine.y_up, (d.close[mine.row + 1] > d.close[mine.row]).astype(float))
        assert np.allclose(mine.y_log_volume, np.log1p(d.volume[mine.row + 1]))
        assert mine.row.min() >= WINDOW - 1 + 24  # 24 bars of warm-up for the 25-bar lookback


def test_no_look_ahead_future_bars_change_nothing_before_them(
    histories: list[SeriesHistory],
) -> None:
    """Scramble every bar after T: inputs of samples whose window ends before T are identical."""
    h = histories[0]
    data = prepare([h])
    columns = feature_index(FEATURE_NAMES)
    cuts = make_cuts(data, test_days=30, validation_fraction=0.2, train_days=None, purge_bars=24)
    samples = build_samples(data, WINDOW, cuts)
    train = samples.of(TRAIN)
    scaler = fit_scaler(data, train, columns, WINDOW)
    t_row = 4000
    rng = np.random.default_rng(0)
    scrambled = h.bars.copy()
    later = scrambled.index > t_row
    for col in ("open", "high", "low", "close"):
        scrambled.loc[later, col] = scrambled.loc[later, col] * rng.uniform(0.5, 1.5, later.sum())
    scrambled.loc[later, "high"] = scrambled.loc[later, ["open", "high", "low", "close"]].max(
        axis=1
    )
    scrambled.loc[later, "low"] = scrambled.loc[later, ["open", "high", "low", "close"]].min(axis=1)
    scrambled.loc[later, "volume"] = rng.uniform(1, 1e4, later.sum())
    data2 = prepare([cut_history(h, scrambled)])
    samples2 = build_samples(data2, WINDOW, cuts)
    before = samples.row <= t_row
    assert before.sum() > 3000
    mine = samples.take(before)
    theirs = samples2.take(samples2.row <= t_row)
    assert np.array_equal(mine.row, theirs.row)
    x1 = windows(data, mine, columns, WINDOW, scaler)
    x2 = windows(data2, theirs, columns, WINDOW, scaler)
    assert np.array_equal(x1, x2)
    # and the window of a sample ends exactly at its row: the last input row is bar t's features
    last = x1[:, -1, :] * np.asarray(scaler.scale) + np.asarray(scaler.mean)
    assert np.allclose(last, data[0].features[mine.row], rtol=1e-5, atol=1e-5)
    # the targets at and after T do change
    assert not np.array_equal(samples.y_up[~before], samples2.y_up[samples2.row > t_row])


def test_splits_are_time_ordered_purged_and_share_cuts(histories: list[SeriesHistory]) -> None:
    data = prepare(histories)
    cuts = make_cuts(data, test_days=40, validation_fraction=0.25, train_days=None, purge_bars=30)
    samples = build_samples(data, WINDOW, cuts)
    purge = 30 * HOUR
    for i in range(len(data)):
        mine = samples.take(samples.series == i)
        tr, va, te = (mine.target_ms[mine.split == s] for s in (TRAIN, VALIDATION, TEST))
        assert tr.max() < cuts.validation_ms - purge
        assert va.min() >= cuts.validation_ms and va.max() < cuts.test_ms - purge
        assert te.min() >= cuts.test_ms
        # the newest training window ends before the first validation target by the purge gap
        assert tr.max() + purge < va.min()
        # nothing is shuffled: each split is one contiguous time range in sample order
        assert np.all(np.diff(mine.split) >= 0)
    last_bar = min(int(d.open_ms[-1]) for d in data)
    assert cuts.test_ms == last_bar - 40 * 24 * HOUR


def test_scaler_uses_training_rows_only(histories: list[SeriesHistory]) -> None:
    """Changing every validation and test bar leaves the scaler exactly as it was."""
    data = prepare(histories)
    columns = feature_index(FEATURE_NAMES)
    cuts = make_cuts(data, test_days=60, validation_fraction=0.2, train_days=None, purge_bars=24)
    train = build_samples(data, WINDOW, cuts).of(TRAIN)
    scaler = fit_scaler(data, train, columns, WINDOW)

    # the statistics are those of the rows covered by training windows
    rows = np.concatenate(
        [
            d.features[np.arange(len(d.open_ms)) <= train.row[train.series == i].max()]
            for i, d in enumerate(data)
        ]
    )
    rows = rows[np.isfinite(rows).all(axis=1)]
    assert np.allclose(scaler.mean, rows.mean(axis=0))

    boundary = cuts.validation_ms - cuts.purge_ms
    changed = []
    for h in histories:
        bars = h.bars.copy()
        late = bars["open_ms"] >= boundary
        bars.loc[late, ["open", "high", "low", "close"]] *= 10.0
        bars.loc[late, "volume"] *= 1000.0
        changed.append(cut_history(h, bars))
    data2 = prepare(changed)
    train2 = build_samples(data2, WINDOW, cuts).of(TRAIN)
    assert np.array_equal(train.row, train2.row)
    assert fit_scaler(data2, train2, columns, WINDOW) == scaler


def test_windows_with_gaps_are_dropped(histories: list[SeriesHistory]) -> None:
    h = histories[0]
    bars = h.bars.copy()
    bars.loc[3000, ["open", "high", "low", "close", "volume"]] = np.nan  # one missing bar
    data = prepare([cut_history(h, bars)])
    cuts = make_cuts(data, test_days=30, validation_fraction=0.2, train_days=None, purge_bars=24)
    samples = build_samples(data, WINDOW, cuts)
    # row 2999 has no target; rows 3000..3024 have a lookback touching the gap (25 bars),
    # so the first clean 24-row window ends at 3024 + 24: HISTORY_BARS - 1 + WINDOW lost rows
    first_clean = 3000 + HISTORY_BARS + WINDOW - 1
    assert not np.any((samples.row >= 2999) & (samples.row < first_clean))
    assert (samples.row == first_clean).any()
    assert (samples.row == 2998).any()
    x = windows(data, samples, feature_index(FEATURE_NAMES), WINDOW,
                fit_scaler(data, samples.of(TRAIN), feature_index(FEATURE_NAMES), WINDOW))  # fmt: skip
    assert np.isfinite(x).all()


def test_train_days_limits_training_and_bad_splits_are_refused(
    histories: list[SeriesHistory],
) -> None:
    data = prepare(histories)
    cuts = make_cuts(data, test_days=30, validation_fraction=0.2, train_days=60, purge_bars=24)
    assert cuts.validation_ms - cuts.train_ms == 60 * 24 * HOUR
    assert cuts.test_ms - cuts.validation_ms == 15 * 24 * HOUR
    with pytest.raises(DatasetError, match="too short"):
        make_cuts(data, test_days=400, validation_fraction=0.2, train_days=None, purge_bars=24)
    with pytest.raises(DatasetError, match="unknown features"):
        feature_index(["log_volume", "moon_phase"])


def test_features_constant_in_training_are_switched_off(histories: list[SeriesHistory]) -> None:
    """XRP has no whale data: its whale columns are constant, so the scaler mutes them."""
    data = prepare([histories[1]])
    names = list(FEATURE_NAMES)
    cuts = make_cuts(data, test_days=30, validation_fraction=0.2, train_days=None, purge_bars=24)
    scaler = fit_scaler(
        data, build_samples(data, WINDOW, cuts).of(TRAIN), feature_index(names), WINDOW
    )
    muted = inert(scaler, names)
    assert muted == [n for n in names if n.startswith(("whale_", "stable_"))]
    assert all(scaler.mean[names.index(n)] == 0.0 for n in muted)
    # a whale value of e^20 USD arrives at the network as (about) zero
    assert 20.0 / scaler.scale[names.index("whale_inflow_log")] < 1e-7
    assert "ret_1" not in muted


PAGE_HOUR = 1_740_000_000 // 3600 * 3600 + 3600  # a bar inside the shipped slice (seconds)


def tx(n: int, symbol: str, usd: float, sides: tuple[str, str], at: int) -> dict[str, object]:
    """One transaction of Whale Alert's REST ``/v1/transactions`` pages."""
    src, dst = sides
    return {"blockchain": "bitcoin" if symbol == "btc" else "ethereum", "symbol": symbol,
            "id": str(n), "transaction_type": "transfer", "hash": f"h{n}",
            "from": {"address": "a", "owner_type": src}, "to": {"address": "b", "owner_type": dst},
            "timestamp": at, "amount": 1, "amount_usd": usd, "transaction_count": 1}  # fmt: skip


def test_block_time_history_is_placed_by_the_daemons_rule(tmp_path: Path) -> None:
    """Known at block time + history delay, in that bar; under min_value_usd: not counted."""
    page = {"result": "success", "count": 3, "transactions": [
        tx(1, "btc", 5e6, ("unknown", "exchange"), PAGE_HOUR + 3600 - 240),  # known 1 min into the next bar
        tx(2, "btc", 7e6, ("exchange", "unknown"), PAGE_HOUR + 60),
        tx(3, "btc", 999_999.0, ("unknown", "exchange"), PAGE_HOUR + 120),
    ]}  # fmt: skip
    pages = tmp_path / "whale_pages.json"
    pages.write_text(json.dumps(page))
    rule = WhaleRule(min_value_usd=1e6, history_delay_ms=300_000)
    (btc,) = from_csv([DATA / "binance_BTC-USDT_1h.csv.gz"], [pages], whale_rule=rule)
    columns = ["whale_inflow_usd", "whale_outflow_usd", "whale_count"]

    def at(open_ms: int) -> list[float]:
        return [float(v) for v in btc.bars.loc[btc.bars["open_ms"] == open_ms, columns].iloc[0]]

    assert at(PAGE_HOUR * 1000) == [0.0, 7e6, 1.0]
    assert at(PAGE_HOUR * 1000 + HOUR) == [5e6, 0.0, 1.0]
    assert btc.bars["whale_count"].sum() == 2.0


def test_whale_alert_rest_pages_become_per_bar_flows(tmp_path: Path) -> None:
    """Single transfers in Whale Alert's REST format, aggregated like the live feed does."""
    hour = PAGE_HOUR
    page = {"result": "success", "count": 4, "transactions": [
        tx(1, "btc", 5e6, ("unknown", "exchange"), hour + 60),  # inflow
        tx(2, "btc", 7e6, ("exchange", "unknown"), hour + 120),  # outflow
        tx(3, "btc", 9e6, ("exchange", "exchange"), hour + 180),  # internal: counted only
        tx(4, "usdt", 2e7, ("unknown", "exchange"), hour + 240),  # stablecoin inflow
    ]}  # fmt: skip
    pages = tmp_path / "whale_pages.json"
    pages.write_text(json.dumps(page))
    btc, eth = from_csv(
        [DATA / "binance_BTC-USDT_1h.csv.gz", DATA / "binance_ETH-USDT_1h.csv.gz"], [pages]
    )
    row = btc.bars.index[btc.bars["open_ms"] == hour * 1000][0]
    got = btc.bars.loc[row, ["whale_inflow_usd", "whale_outflow_usd", "whale_count"]].tolist()
    assert got == [5e6, 7e6, 3.0]
    assert btc.bars.loc[row, "stable_inflow_usd"] == 2e7
    assert btc.bars["whale_count"].sum() == 3.0  # nothing anywhere else
    eth_row = eth.bars.index[eth.bars["open_ms"] == hour * 1000][0]
    assert eth.bars.loc[eth_row, "stable_inflow_usd"] == 2e7  # market-wide
    assert eth.bars["whale_count"].sum() == 0.0
