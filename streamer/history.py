"""History from CSV files: candles, hourly whale exchange flows, and the bar table.

The bar table (columns :data:`streamer.features.BAR_COLUMNS`) is what the
feature code reads, offline and online: one row per grid position of the
timeframe, missing candles as NaN rows, whale aggregates per bar.

Whale columns per bar: ``whale_inflow_usd`` / ``whale_outflow_usd`` are USD of
the series' base asset moved into / out of exchanges; ``whale_count`` is the
number of whale transfers of that asset; ``stable_inflow_usd`` is market-wide
stablecoin exchange inflow. The hourly flow CSVs (``streamer/data/SOURCES.md``)
carry hourly sums, not single transfers: each hour with inflow counts as one
transfer, each hour with outflow as another (the exchange simulator replays
such an hour as one inflow alert and one outflow alert, so live counts agree).
They have no stablecoin data, so ``stable_inflow_usd`` is 0. They cover only
Nov 2024 – Oct 2025 (BTC and ETH): outside that range, and for other assets,
the whale columns are 0 ("no flows seen"), a known limitation of the data.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from streamer.features import BAR_COLUMNS
from streamer.grid import grid_array
from whalecast.domain import Series, timeframe_ms

CANDLE_COLUMNS = ("timestamp_ms", "open", "high", "low", "close", "volume")
FLOW_COLUMNS = ("timestamp_ms", "symbol", "exchange_inflow_usd", "exchange_outflow_usd")
WHALE_COLUMNS = ("whale_inflow_usd", "whale_outflow_usd", "whale_count", "stable_inflow_usd")
_PAIR_RE = re.compile(r"(?:^|_)([A-Za-z0-9]+)-([A-Za-z0-9]+)(?:_|\.|$)")


def symbol_from_path(path: str | Path) -> str:
    """``binance_BTC-USDT_1h.csv.gz`` -> ``BTC/USDT``."""
    match = _PAIR_RE.search(Path(path).name)
    if match is None:
        raise ValueError(f"cannot read a BASE-QUOTE pair from the file name {Path(path).name!r}")
    return f"{match.group(1).upper()}/{match.group(2).upper()}"


def _read_csv(path: str | Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read CSV: {e}") from e
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (has {list(frame.columns)})")
    return frame


def _candle_problem(frame: pd.DataFrame, bar_ms: int) -> str | None:
    prices = frame[["open", "high", "low", "close"]].to_numpy(np.float64)
    values = frame[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)
    ts = frame["open_ms"].to_numpy(np.int64)
    checks = {
        "non-finite values": ~np.isfinite(values).all(axis=1),
        "non-positive prices or negative volume": (prices <= 0).any(axis=1) | (values[:, 4] < 0),
        "high below low, or open/close outside [low, high]": (
            (prices[:, 1] < prices[:, 2])
            | (prices[:, [0, 3]] > prices[:, [1]]).any(axis=1)
            | (prices[:, [0, 3]] < prices[:, [2]]).any(axis=1)
        ),
        "open time off the bar grid": ts % bar_ms != 0,
        "open times not strictly increasing": np.r_[False, np.diff(ts) <= 0],
    }
    for reason, bad in checks.items():
        if bad.any():
            row = int(np.argmax(bad))
            return f"{reason} ({int(bad.sum())} rows, first at open_ms={ts[row]})"
    return None


def load_candles_csv(
    path: str | Path, exchange: str = "binance", symbol: str | None = None, timeframe: str = "1h"
) -> pd.DataFrame:
    """Candles from a ``timestamp_ms,open,high,low,close,volume`` CSV (plain or .gz).

    Returns columns ``open_ms, open, high, low, close, volume`` (open_ms int64
    UTC ms, the bar's open time), sorted as in the file, with
    ``attrs["series"]`` the :class:`Series`. The symbol defaults to the pair in
    the file name (``BTC-USDT`` -> ``BTC/USDT``). Invalid rows (non-finite,
    non-positive prices, inconsistent OHLC, off-grid or unsorted/duplicate open
    times) raise ``ValueError``: history is never silently repaired. Missing
    bars stay missing; :func:`bar_table` puts them on the grid as NaN rows.
    """
    frame = _read_csv(path, CANDLE_COLUMNS)
    frame = frame.rename(columns={"timestamp_ms": "open_ms"})[list(BAR_COLUMNS[:6])]
    frame = frame.astype({"open_ms": "int64", **dict.fromkeys(BAR_COLUMNS[1:6], "float64")})
    problem = _candle_problem(frame, timeframe_ms(timeframe))
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    frame.attrs["series"] = Series(exchange, symbol or symbol_from_path(path), timeframe)
    return frame.reset_index(drop=True)


def load_whale_flows_csv(path: str | Path) -> pd.DataFrame:
    """Hourly exchange flows of one asset (the ``*_exchange_flows_1h.csv`` files).

    Returns columns ``ts_ms`` (the hour's start, UTC ms), ``asset``,
    ``inflow_usd``, ``outflow_usd``, ``count`` (nonzero directions that hour,
    0–2), one row per hour that had flows (absent hours mean no flows).
    """
    frame = _read_csv(path, FLOW_COLUMNS)
    inflow = frame["exchange_inflow_usd"].to_numpy(np.float64)
    outflow = frame["exchange_outflow_usd"].to_numpy(np.float64)
    if not (np.isfinite(inflow).all() and np.isfinite(outflow).all()):
        raise ValueError(f"{path}: non-finite flow values")
    if (inflow < 0).any() or (outflow < 0).any():
        raise ValueError(f"{path}: negative flow values")
    out = pd.DataFrame(
        {
            "ts_ms": frame["timestamp_ms"].to_numpy(np.int64),
            "asset": frame["symbol"].astype(str).str.upper().to_numpy(),
            "inflow_usd": inflow,
            "outflow_usd": outflow,
            "count": (inflow > 0).astype(np.int64) + (outflow > 0).astype(np.int64),
        }
    )
    return out.sort_values("ts_ms", kind="stable").reset_index(drop=True)


def whale_per_bar(whale: pd.DataFrame | None, timeframe: str) -> pd.DataFrame:
    """Whale flows summed per bar open time: index ``open_ms``, columns ``WHALE_COLUMNS``.

    A flow at ``ts_ms`` belongs to the bar containing it. Flows of a coarser
    resolution than the timeframe (hourly flows on 5m bars) land in the bar
    containing the hour's start.
    """
    if whale is None or whale.empty:
        return pd.DataFrame(columns=list(WHALE_COLUMNS), index=pd.Index([], name="open_ms"))
    bar_ms = timeframe_ms(timeframe)
    keyed = pd.DataFrame(
        {
            "open_ms": whale["ts_ms"].to_numpy(np.int64) // bar_ms * bar_ms,
            "whale_inflow_usd": whale["inflow_usd"].to_numpy(np.float64),
            "whale_outflow_usd": whale["outflow_usd"].to_numpy(np.float64),
            "whale_count": whale["count"].to_numpy(np.float64),
            "stable_inflow_usd": 0.0,
        }
    )
    return keyed.groupby("open_ms").sum()


def bar_table(candles: pd.DataFrame, whale: pd.DataFrame | None, timeframe: str) -> pd.DataFrame:
    """The bar table: columns ``BAR_COLUMNS`` on the full grid of the candles' range.

    Missing candles are NaN rows (open_ms filled in); whale columns are 0 for
    bars without flows. Pass the whale flows of the candles' base asset only.
    """
    grid = grid_array(
        candles[list(BAR_COLUMNS[:6])].assign(**dict.fromkeys(WHALE_COLUMNS, 0.0)), timeframe
    )
    table = pd.DataFrame(grid, columns=list(BAR_COLUMNS))
    table["open_ms"] = table["open_ms"].astype(np.int64)
    flows = whale_per_bar(whale, timeframe).reindex(table["open_ms"], fill_value=0.0)
    table[list(WHALE_COLUMNS)] = flows.to_numpy(np.float64)
    present = table["close"].notna().to_numpy()
    table.loc[~present, list(WHALE_COLUMNS)] = np.nan
    table.attrs = dict(candles.attrs)
    return table
