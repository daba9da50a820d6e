"""The feature list (v1): one definition, computed over history and bar by bar.

Input is a table of closed bars, one row per bar, columns :data:`BAR_COLUMNS`
(open time in UTC ms, OHLCV, and the bar's whale aggregates). Every window is
counted in bars of the series' own timeframe. One vectorised numpy function,
:func:`feature_rows`, computes the features for the last ``rows`` positions of
a gap-free bar grid; :func:`compute_features` (training, whole history) and
:func:`latest_features` (the daemon, newest row from the stored tail) both call
it, so the two paths cannot drift apart. Every window statistic is computed on
its own window (no running sums), which makes the newest row from a short tail
equal to the same row of a full-history computation.

Definitions (``c`` close, ``o`` open, ``h`` high, ``l`` low, ``v`` volume,
``r`` the 1-bar log return ``log(c_t / c_{t-1})``; "over N" means the N bars
ending at, and including, the current bar):

- ``ret_1, ret_3, ret_6, ret_24``: ``log(c_t / c_{t-k})``.
- ``range_rel = (h - l) / c``; ``body_rel = (c - o) / c``;
  ``upper_wick_rel = (h - max(o, c)) / c``; ``lower_wick_rel = (min(o, c) - l) / c``.
- ``vol_6, vol_24``: sample standard deviation (ddof 1) of ``r`` over 6 / 24.
- ``log_volume = log1p(v)``; ``volume_z_24``: z-score of ``log1p(v)`` against its
  mean and sample std over 24 (0 when that std is 0); ``volume_ratio_6_24``:
  mean ``v`` over 6 / mean ``v`` over 24 (1 when both are 0);
  ``log_dollar_volume = log1p(v * c)``.
- ``rsi_14``: RSI on simple averages, in [0, 100]: with ``d = c_t - c_{t-1}``
  over the last 14 differences, ``100 * mean(max(d, 0)) / (mean(max(d, 0)) +
  mean(max(-d, 0)))``, 50 when the price did not move. Wilder's recursive
  smoothing is deliberately not used: it depends on unbounded history, so the
  daemon's finite stored tail could not reproduce the training value exactly.
- ``close_vs_sma_24 = log(c / mean(c over 24))``.
- ``atr_14_rel``: mean true range over 14 divided by ``c``, true range
  ``max(h - l, |h - c_{t-1}|, |l - c_{t-1}|)`` (simple mean, same reason as RSI).
- ``whale_inflow_log, whale_outflow_log``: ``log1p`` of this bar's exchange inflow
  / outflow in USD of the series' base asset.
- ``whale_inflow_sum_6, whale_inflow_sum_24``: ``log1p`` of the inflow USD summed
  over 6 / 24; ``whale_outflow_max_3``: ``log1p`` of the largest per-bar outflow
  over 3; ``whale_count_12``: whale transfers of the asset over 12 (a count).
- ``whale_netflow_6``: signed log of the net exchange *outflow* over 6,
  ``sign(n) * log1p(|n|)`` with ``n = sum(outflow) - sum(inflow)``: positive
  means coins left exchanges, the sign convention of ``net_exchange_outflow_usd``.
- ``stable_inflow_6``: ``log1p`` of market-wide stablecoin exchange inflow USD
  summed over 6.
- ``hour_sin, hour_cos``: ``sin/cos(2π · f)`` with ``f`` the bar's open time as a
  fraction of its UTC day; ``dow_sin, dow_cos``: ``sin/cos(2π · d / 7)`` with
  ``d`` the UTC weekday of the open time, Monday = 0.

Volume memory and the daily profile (appended after the list above, which the seed
presets read as :data:`SEED_FEATURES`; existing names never change meaning, so a model
trained on the shorter list is still served from the longer rows):

- ``abs_ret_1 = |r|`` (this bar's absolute log return).
- ``log_volume_mean_6, log_volume_mean_24``: mean of ``log1p(v)`` over 6 / 24, the
  HAR-style medium and long volume levels next to ``log_volume`` (the short one).
- ``hour_sin_k, hour_cos_k`` for ``k = 2, 3, 4``: ``sin/cos(2π · k · f)``, the higher
  harmonics of the time of day: with ``hour_sin/cos`` a linear model can draw a daily
  volume profile with a morning and an evening peak.

Gaps (the rule both paths follow). Bars live on the full time grid of their
timeframe; a bar missing from the grid is a row of NaN, never dropped and never
filled, so no later bar is ever shifted into its place. A feature whose lookback
(the bars it reads, current bar included: ``k + 1`` for ``ret_k``, 7 / 25 for
``vol_6`` / ``vol_24``, 15 for RSI and ATR, N for a statistic "over N", 1 for the
per-bar and calendar features) touches a missing bar, or reaches before the
first bar, is NaN. A model window that contains any NaN is not ready: nothing is
predicted from padding. A single missing bar therefore costs ``HISTORY_BARS - 1
+ window`` bars (48 for 1h bars and a 24-step window) without predictions, which
is the price of never predicting from invented data.

Whale aggregates are per-bar inputs, not features of their own: the historical
hourly flows shipped with the project cover only Nov 2024 – Oct 2025 (BTC and
ETH), and outside that range, or for other assets, the aggregates are 0 ("no
flows seen") — a known limitation for training on older history.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from streamer.feature_groups import GROUPS, Array, Bars
from streamer.grid import grid_array
from whalecast.domain import timeframe_ms
from whalecast.keys import BAR_COLUMNS as STORED_BAR_COLUMNS

FEATURE_VERSION: Final[int] = 1

BAR_COLUMNS: Final = STORED_BAR_COLUMNS  # the stored bar's layout is the features' input

#: Each feature of v1 with its lookback in bars (current bar included).
_LOOKBACK: Final[dict[str, int]] = {
    "ret_1": 2, "ret_3": 4, "ret_6": 7, "ret_24": 25,
    "range_rel": 1, "body_rel": 1, "upper_wick_rel": 1, "lower_wick_rel": 1,
    "vol_6": 7, "vol_24": 25,
    "log_volume": 1, "volume_z_24": 24, "volume_ratio_6_24": 24, "log_dollar_volume": 1,
    "rsi_14": 15, "close_vs_sma_24": 24, "atr_14_rel": 15,
    "whale_inflow_log": 1, "whale_outflow_log": 1,
    "whale_inflow_sum_6": 6, "whale_inflow_sum_24": 24, "whale_outflow_max_3": 3,
    "whale_count_12": 12, "whale_netflow_6": 6, "stable_inflow_6": 6,
    "hour_sin": 1, "hour_cos": 1, "dow_sin": 1, "dow_cos": 1,
    # appended later: long volume memory and the daily profile (see "Volume memory" above)
    "abs_ret_1": 2, "log_volume_mean_6": 6, "log_volume_mean_24": 24,
    "hour_sin_2": 1, "hour_cos_2": 1, "hour_sin_3": 1, "hour_cos_3": 1,
    "hour_sin_4": 1, "hour_cos_4": 1,
}  # fmt: skip

FEATURE_NAMES: Final[tuple[str, ...]] = tuple(_LOOKBACK)
#: The first list, which the seed presets read; later features are appended after it.
SEED_FEATURES: Final[tuple[str, ...]] = FEATURE_NAMES[: FEATURE_NAMES.index("dow_cos") + 1]

#: Bars needed (current bar included) before a row is fully defined: the row at
#: grid position ``t`` reads bars ``t - HISTORY_BARS + 1 .. t``.
HISTORY_BARS: Final[int] = max(_LOOKBACK.values())


def feature_rows(bars: Array, rows: int) -> Array:
    """Features of the last ``rows`` positions of each series' bar grid.

    ``bars`` is ``(series, time, len(BAR_COLUMNS))`` float64 on a gap-free grid
    (consecutive open times one bar apart; a missing bar is a row whose value
    columns are NaN). Returns ``(series, rows, len(FEATURE_NAMES))`` float64.
    The online path passes the last ``HISTORY_BARS`` bars and ``rows=1``.
    """
    if bars.ndim != 3 or bars.shape[2] != len(BAR_COLUMNS):
        raise ValueError(f"bars must be (series, time, {len(BAR_COLUMNS)}), got {bars.shape}")
    if not 1 <= rows <= bars.shape[1]:
        raise ValueError(f"rows must be in 1..{bars.shape[1]}, got {rows}")
    bars = np.asarray(bars, dtype=np.float64)
    view = Bars(bars, rows, HISTORY_BARS)
    values: dict[str, Array] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for group in GROUPS:
            values.update(group(view))
    lookbacks = set(_LOOKBACK.values())
    clean = {n: np.sum(view.windows(view.missing, n), axis=2) == 0 for n in lookbacks}
    out = np.empty((bars.shape[0], rows, len(FEATURE_NAMES)), dtype=np.float64)
    for i, name in enumerate(FEATURE_NAMES):
        out[:, :, i] = np.where(clean[_LOOKBACK[name]], values[name], np.nan)
    return out


def compute_features(bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Offline path: one row per input bar (same index), columns ``FEATURE_NAMES``, float64.

    Missing grid positions between input rows are treated as missing bars (see
    the gap rule above); rows without enough clean history are NaN.
    """
    grid = grid_array(bars, timeframe)
    values = feature_rows(grid[np.newaxis], rows=len(grid))[0]
    positions = (bars["open_ms"].to_numpy(np.int64) - int(grid[0, 0])) // timeframe_ms(timeframe)
    return pd.DataFrame(values[positions], index=bars.index, columns=list(FEATURE_NAMES))


def latest_features(bars: pd.DataFrame | Array, timeframe: str) -> Array:
    """Online path: the feature row of the newest bar, from the stored recent bars.

    ``bars`` is a DataFrame with ``BAR_COLUMNS`` or an array in that column
    order; only its last ``HISTORY_BARS`` grid positions are read. Equal to the
    last row of :func:`compute_features` over any longer history.
    """
    tail = grid_array(bars, timeframe, last=HISTORY_BARS)
    row: Array = feature_rows(tail[np.newaxis], rows=1)[0, 0]
    return row
