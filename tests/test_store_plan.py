"""An append worked out against the mirror, before anything is sent: pure, no Redis."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.features import HISTORY_BARS, feature_rows
from streamer.mirror import Mirror
from streamer.store_format import BarRecord
from streamer.store_plan import expected_statuses, plan_append, split_rounds
from whalecast.domain import Candle, Series, WhaleBar

WINDOW = 4
H = 3_600_000
T0 = 1_767_225_600_000  # on the 1h grid
BTC = Series("binance", "BTC/USDT", "1h")
ETH = Series("binance", "ETH/USDT", "1h")


def record(series: Series, open_ms: int, close: float = 100.0) -> BarRecord:
    candle = Candle(series.exchange, series.symbol, series.timeframe, open_ms,
                    close, close + 1, close - 1, close, 10.0)  # fmt: skip
    return BarRecord(candle, WhaleBar())


def mirror_with(bars: int) -> Mirror:
    """A mirror that committed ``bars`` bars of BTC and ETH, the last opening at T0."""
    mirror = Mirror([BTC, ETH], WINDOW, HISTORY_BARS + WINDOW)
    for k in range(bars):
        records = [record(s, T0 - (bars - 1 - k) * H, 100.0 + k) for s in (BTC, ETH)]
        plan = plan_append(mirror, records, allow_gap=False)
        assert plan.first is not None
        mirror.commit(plan.first.advance)
    return mirror


def test_rounds_hold_one_bar_per_series_in_order() -> None:
    records = [record(BTC, T0), record(ETH, T0), record(BTC, T0 + H), record(BTC, T0 + 2 * H)]
    assert split_rounds(records) == [[0, 1], [2], [3]]
    assert split_rounds([]) == []


def test_statuses_are_what_the_script_answers_for_the_mirror_state() -> None:
    mirror = mirror_with(3)
    positions = mirror.positions([BTC, ETH])
    opens = np.array([T0, T0 + 2 * H])  # BTC again, ETH one bar past the next
    assert expected_statuses(mirror, positions, opens, allow_gap=False) == ["duplicate", "gap"]
    assert expected_statuses(mirror, positions, opens, allow_gap=True) == ["duplicate", "appended"]  # fmt: skip
    nxt = np.array([T0 + H, T0 + H])
    assert expected_statuses(mirror, positions, nxt, allow_gap=False) == ["appended", "appended"]


def test_a_plan_forecasts_the_windows_and_leaves_the_mirror_alone() -> None:
    mirror = mirror_with(HISTORY_BARS + WINDOW)
    before = mirror.rows.copy()
    plan = plan_append(mirror, [record(BTC, T0 + H, 200.0), record(ETH, T0, 50.0)], allow_gap=False)
    assert plan.series == [BTC]  # ETH's bar is a duplicate
    forecast = plan.windows()
    np.testing.assert_array_equal(mirror.rows, before)  # nothing moves before Redis confirms

    assert plan.first is not None
    mirror.commit(plan.first.advance)
    np.testing.assert_array_equal(forecast, mirror.rows[mirror.positions([BTC])])
    newest = feature_rows(mirror.bars[mirror.positions([BTC])], rows=1)[0, 0]
    np.testing.assert_allclose(forecast[0, -1], newest.astype(np.float32))
    with pytest.raises(RuntimeError, match="stale"):
        plan.windows()  # the mirror moved on: the forecast is no longer one


def test_a_record_that_is_not_a_closed_bar_is_refused() -> None:
    mirror = mirror_with(1)
    bad = record(BTC, T0 + H, close=-5.0)
    with pytest.raises(ValueError, match="refusing"):
        plan_append(mirror, [bad], allow_gap=False)
