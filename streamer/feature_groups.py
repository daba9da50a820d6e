"""The feature groups: each computes its features of :mod:`streamer.features`' list.

The definitions are written out once, in :mod:`streamer.features`; this module holds
their numpy code, one function per group over a :class:`Bars` view of the bar grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt

from whalecast.keys import BAR_COLUMNS

Array = npt.NDArray[np.float64]

_DAY_MS: Final = 86_400_000
_EPOCH_WEEKDAY: Final = 3  # 1970-01-01 was a Thursday (Monday = 0)
_COL: Final = {name: i for i, name in enumerate(BAR_COLUMNS)}


class Bars:
    """Column access and window helpers over a ``(series, time, column)`` array.

    Every derived array is aligned on its last element (the newest bar), so a
    shorter array (a difference) needs no re-alignment. The table is padded in
    front with NaN rows (once, only when shorter than ``rows + history - 1``,
    ``history`` the longest lookback), so every lag and window of every requested row exists.
    """

    def __init__(self, bars: Array, rows: int, history: int) -> None:
        short = rows + history - 1 - bars.shape[1]
        if short > 0:
            pad = np.full((bars.shape[0], short, bars.shape[2]), np.nan)
            bars = np.concatenate([pad, bars], axis=1)
        self.columns: Array = np.ascontiguousarray(
            bars.transpose(2, 0, 1)
        )  # (column, series, time)
        self.missing: Array = np.asarray(np.isnan(self.columns[1:]).any(axis=0), np.float64)
        self.rows = rows

    def col(self, name: str) -> Array:
        """The whole column, ``(series, time)``."""
        column: Array = self.columns[_COL[name]]
        return column

    def tail(self, values: Array) -> Array:
        """The last ``rows`` positions of a ``(series, time)`` array."""
        return values[:, values.shape[1] - self.rows :]

    def lag(self, values: Array, k: int) -> Array:
        """``values[t - k]`` for the last ``rows`` positions."""
        end = values.shape[1] - k
        return values[:, end - self.rows : end]

    def windows(self, values: Array, n: int) -> Array:
        """``(series, rows, n)``: the n values ending at each of the last ``rows`` positions."""
        recent = values[:, values.shape[1] - (self.rows + n - 1) :]
        if self.rows == 1:
            return recent[:, np.newaxis, :]
        return np.lib.stride_tricks.sliding_window_view(recent, n, axis=1)


def _step(values: Array) -> tuple[Array, Array]:
    """``(values[t], values[t - 1])``, both aligned on the newest bar."""
    return values[:, 1:], values[:, :-1]


def _safe_div(num: Array, den: Array, default: float) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), default)
    return np.where(np.isnan(num) | np.isnan(den), np.nan, out)


def _price_features(b: Bars) -> dict[str, Array]:
    o, h, low, c = (b.tail(b.col(n)) for n in ("open", "high", "low", "close"))
    log_close = np.log(b.col("close"))
    out = {f"ret_{k}": b.tail(log_close) - b.lag(log_close, k) for k in (1, 3, 6, 24)}
    out["range_rel"] = (h - low) / c
    out["body_rel"] = (c - o) / c
    out["upper_wick_rel"] = (h - np.maximum(o, c)) / c
    out["lower_wick_rel"] = (np.minimum(o, c) - low) / c
    now, before = _step(log_close)
    one_bar = now - before
    out["vol_6"] = np.std(b.windows(one_bar, 6), axis=2, ddof=1)
    out["vol_24"] = np.std(b.windows(one_bar, 24), axis=2, ddof=1)
    return out


def _volume_features(b: Bars) -> dict[str, Array]:
    v_all = b.col("volume")
    log_v = np.log1p(v_all)
    w24 = b.windows(log_v, 24)
    z = _safe_div(b.tail(log_v) - np.mean(w24, axis=2), np.std(w24, axis=2, ddof=1), 0.0)
    ratio = _safe_div(
        np.mean(b.windows(v_all, 6), axis=2), np.mean(b.windows(v_all, 24), axis=2), 1.0
    )
    return {
        "log_volume": b.tail(log_v),
        "volume_z_24": z,
        "volume_ratio_6_24": ratio,
        "log_dollar_volume": np.log1p(b.tail(v_all) * b.tail(b.col("close"))),
    }


def _oscillator_features(b: Bars) -> dict[str, Array]:
    close = b.col("close")
    now, prev_close = _step(close)
    diffs = b.windows(now - prev_close, 14)
    gain = np.mean(np.maximum(diffs, 0.0), axis=2)
    loss = np.mean(np.maximum(-diffs, 0.0), axis=2)
    high, low = b.col("high")[:, 1:], b.col("low")[:, 1:]
    true_range = np.maximum(
        high - low, np.maximum(np.abs(high - prev_close), np.abs(low - prev_close))
    )
    c = b.tail(close)
    return {
        "rsi_14": 100.0 * _safe_div(gain, gain + loss, 0.5),
        "close_vs_sma_24": np.log(c / np.mean(b.windows(close, 24), axis=2)),
        "atr_14_rel": np.mean(b.windows(true_range, 14), axis=2) / c,
    }


def _whale_features(b: Bars) -> dict[str, Array]:
    inflow, outflow = b.col("whale_inflow_usd"), b.col("whale_outflow_usd")
    in6 = np.sum(b.windows(inflow, 6), axis=2)
    net6 = np.sum(b.windows(outflow, 6), axis=2) - in6
    return {
        "whale_inflow_log": np.log1p(b.tail(inflow)),
        "whale_outflow_log": np.log1p(b.tail(outflow)),
        "whale_inflow_sum_6": np.log1p(in6),
        "whale_inflow_sum_24": np.log1p(np.sum(b.windows(inflow, 24), axis=2)),
        "whale_outflow_max_3": np.log1p(np.max(b.windows(outflow, 3), axis=2)),
        "whale_count_12": np.sum(b.windows(b.col("whale_count"), 12), axis=2),
        "whale_netflow_6": np.sign(net6) * np.log1p(np.abs(net6)),
        "stable_inflow_6": np.log1p(np.sum(b.windows(b.col("stable_inflow_usd"), 6), axis=2)),
    }


def _calendar_features(b: Bars) -> dict[str, Array]:
    open_ms = b.tail(b.col("open_ms"))
    day_fraction = np.mod(open_ms, _DAY_MS) / _DAY_MS
    weekday = np.mod(np.floor_divide(open_ms, _DAY_MS) + _EPOCH_WEEKDAY, 7)
    out = {
        "hour_sin": np.sin(2 * np.pi * day_fraction),
        "hour_cos": np.cos(2 * np.pi * day_fraction),
        "dow_sin": np.sin(2 * np.pi * weekday / 7),
        "dow_cos": np.cos(2 * np.pi * weekday / 7),
    }
    for k in (2, 3, 4):
        out[f"hour_sin_{k}"] = np.sin(2 * np.pi * k * day_fraction)
        out[f"hour_cos_{k}"] = np.cos(2 * np.pi * k * day_fraction)
    return out


def _memory_features(b: Bars) -> dict[str, Array]:
    log_close = np.log(b.col("close"))
    now, before = _step(log_close)
    log_v = np.log1p(b.col("volume"))
    return {
        "abs_ret_1": np.abs(b.tail(now - before)),
        "log_volume_mean_6": np.mean(b.windows(log_v, 6), axis=2),
        "log_volume_mean_24": np.mean(b.windows(log_v, 24), axis=2),
    }


GROUPS: Final[tuple[Callable[[Bars], dict[str, Array]], ...]] = (
    _price_features, _volume_features, _oscillator_features, _whale_features, _calendar_features,
    _memory_features,
)  # fmt: skip
