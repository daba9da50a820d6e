"""The bar grid: a series' bars on every position of its timeframe, a missing bar a NaN row.

Features (:mod:`streamer.features`) and the window store's mirror read bars only
on this grid, so no later bar is ever shifted into a missing one's place.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from whalecast.domain import timeframe_ms
from whalecast.keys import BAR_COLUMNS

Array = npt.NDArray[np.float64]


def grid_array(bars: pd.DataFrame | Array, timeframe: str, last: int | None = None) -> Array:
    """Bars as a ``(time, column)`` array on the full grid from the first to the last bar.

    Missing grid positions become NaN rows (open time filled in). With ``last``,
    only the newest ``last`` grid positions are returned (earlier ones NaN if
    the table is shorter). Rows must be sorted by open time, unique, on the grid.
    """
    table = bars[list(BAR_COLUMNS)].to_numpy(np.float64) if isinstance(bars, pd.DataFrame) else bars
    table = np.asarray(table, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != len(BAR_COLUMNS) or len(table) == 0:
        raise ValueError(f"need a non-empty (time, {len(BAR_COLUMNS)}) table, got {table.shape}")
    bar_ms = timeframe_ms(timeframe)
    open_ms = table[:, 0].astype(np.int64)
    if np.any(open_ms % bar_ms != 0):
        raise ValueError(f"open times off the {timeframe} grid")
    if np.any(np.diff(open_ms) <= 0):
        raise ValueError("open times must be strictly increasing (sorted, no duplicates)")
    end = int(open_ms[-1])
    start = int(open_ms[0]) if last is None else end - (last - 1) * bar_ms
    keep = open_ms >= start
    grid = np.full(((end - start) // bar_ms + 1, len(BAR_COLUMNS)), np.nan)
    grid[:, 0] = np.arange(start, end + 1, bar_ms, dtype=np.int64)
    grid[(open_ms[keep] - start) // bar_ms] = table[keep]
    return grid
