"""In-memory copy of the window store for the daemon's own series (the hot path).

All series share three numpy arrays, so one bar for a thousand series is a
handful of vectorised copies: recent bars on each series' grid (a missing bar
is a NaN row), the newest feature rows (float32, as stored), and the last
bar's open time. Redis stays authoritative; :class:`streamer.store.WindowStore`
commits to the mirror only what the store script confirmed, and refills it
from Redis after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from streamer.features import BAR_COLUMNS, FEATURE_NAMES, HISTORY_BARS, feature_rows
from streamer.grid import grid_array
from whalecast.domain import Series

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
EMPTY = -1  # last open time of a series with no bars
Block = TypeVar("Block", FloatArray, Float32Array)


def shifted(block: Block, steps: IntArray) -> Block:
    """Each series' rows moved ``steps[j]`` places towards the start, NaN filling the end."""
    length = block.shape[1]
    if (steps == 1).all():  # the common case: one bar after the last
        out = np.empty_like(block)
        out[:, :-1] = block[:, 1:]
        out[:, -1] = np.nan
        return out
    out = np.full_like(block, np.nan)
    for step in np.unique(steps):
        chosen = steps == step
        if step < length:
            out[chosen, : length - step] = block[chosen, step:]
    return out


def rolled(block: Block, advance: Advance, newest: Block) -> Block:
    """A copy of the advanced series' rows of ``block``, moved by their steps (a new
    series starts empty), with ``newest`` last."""
    moved = shifted(block[advance.positions], advance.steps)
    moved[advance.fresh] = np.nan
    moved[:, -1] = newest
    return moved


def merged_grid(bars: FloatArray, timeframe: str, length: int) -> FloatArray:
    """The newest ``length`` grid positions of some bars (first of equal open times wins)."""
    _, first = np.unique(bars[:, 0], return_index=True)
    return grid_array(bars[first], timeframe, last=length)


def window_rows(grid: FloatArray, window: int) -> Float32Array:
    """The newest ``window`` feature rows of one series' bar grid, as stored (float32)."""
    rows: Float32Array = feature_rows(grid[np.newaxis], rows=window)[0].astype(np.float32)
    return rows


@dataclass(frozen=True)
class Advance:
    """One bar appended to some series, computed but not applied: :meth:`Mirror.commit`
    applies it once the store confirmed the write."""

    positions: IntArray  # mirror index of each series
    open_ms: IntArray
    steps: IntArray  # grid positions moved (1 + bars missing before the new one)
    fresh: BoolArray  # series that had no bar yet
    new_bars: FloatArray  # (k, columns)
    newest_rows: Float32Array  # (k, features): the new bars' feature rows


class Mirror:
    """Recent bars, feature windows and last open times of a fixed set of series."""

    def __init__(self, series: Sequence[Series], window: int, bars_kept: int) -> None:
        if bars_kept < HISTORY_BARS - 1 + window:
            raise ValueError(f"bars_kept must be at least {HISTORY_BARS - 1 + window}")
        self.series = tuple(series)
        self.index = {s: i for i, s in enumerate(self.series)}
        if len(self.index) != len(self.series):
            raise ValueError("series must be unique")
        count = len(self.series)
        self.window = window
        self.bars_kept = bars_kept
        self.bars = np.full((count, bars_kept, len(BAR_COLUMNS)), np.nan)
        self.rows = np.full((count, window, len(FEATURE_NAMES)), np.nan, dtype=np.float32)
        self.last = np.full(count, EMPTY, dtype=np.int64)
        self.bar_ms = np.array([s.bar_ms for s in self.series], dtype=np.int64)
        self._everyone = np.arange(count, dtype=np.int64)
        self.generation = 0  # counts changes: a forecast is valid only for the one it saw

    def positions(self, series: Sequence[Series]) -> IntArray:
        try:
            return np.array([self.index[s] for s in series], dtype=np.int64)
        except KeyError as e:
            raise KeyError(f"series {e.args[0]} is not one of this store's series") from e

    def advance(self, positions: IntArray, new_bars: FloatArray) -> Advance:
        """Append one bar to each given series (missing bars before it become NaN rows).

        Only the newest ``HISTORY_BARS`` bars are moved to compute the feature rows;
        the whole blocks move at :meth:`commit`.
        """
        open_ms = new_bars[:, 0].astype(np.int64)
        last = self.last[positions]
        fresh = last == EMPTY
        steps = np.where(fresh, 1, (open_ms - last) // self.bar_ms[positions])
        tail = shifted(self.bars[positions, -HISTORY_BARS:, :], steps)
        tail[:, -1, :] = new_bars
        tail[fresh, :-1, :] = np.nan
        newest = feature_rows(tail, rows=1)[:, 0, :].astype(np.float32)
        return Advance(positions, open_ms, steps, fresh, new_bars, newest)

    def commit(self, advance: Advance) -> None:
        self.generation += 1
        self._roll(self.bars, advance, advance.new_bars)
        self._roll(self.rows, advance, advance.newest_rows)
        self.last[advance.positions] = advance.open_ms

    def preview(self, advance: Advance) -> Float32Array:
        """The feature windows of ``advance``'s series as :meth:`commit` will leave them."""
        return rolled(self.rows, advance, advance.newest_rows)

    def _roll(self, block: Block, advance: Advance, newest: Block) -> None:
        """Move the series' rows by their steps and put ``newest`` last, in place."""
        positions = advance.positions
        if (
            len(positions) == len(self.series)
            and (advance.steps == 1).all()
            and not advance.fresh.any()
            and (positions == self._everyone).all()
        ):  # the common case: every series, one bar after its last
            block[:, :-1] = block[:, 1:]
            block[:, -1] = newest
            return
        block[positions] = rolled(block, advance, newest)

    def reset(self, position: int, bars: FloatArray, rows: Float32Array, last: int) -> None:
        """Set one series' state: ``bars`` on its grid ending at ``last`` (oldest first)."""
        self.generation += 1
        self.bars[position] = np.nan
        if len(bars):
            self.bars[position, -len(bars) :] = bars[-self.bars.shape[1] :]
        self.rows[position] = rows
        self.last[position] = last

    def clear(self, position: int) -> None:
        self.generation += 1
        self.bars[position] = np.nan
        self.rows[position] = np.nan
        self.last[position] = EMPTY

    def present_bars(self, position: int) -> FloatArray:
        """The stored bars of one series that exist (no NaN rows), oldest first."""
        bars = self.bars[position]
        out: FloatArray = bars[~np.isnan(bars[:, 4])]
        return out

    def windows(self, positions: IntArray) -> tuple[Float32Array, BoolArray]:
        rows = self.rows[positions]
        return rows, ready(rows)


def ready(rows: Float32Array) -> BoolArray:
    """A window is ready when it holds no NaN (no missing bar, no undefined feature)."""
    mask: BoolArray = np.asarray(np.isfinite(rows).all(axis=(1, 2)))
    return mask
