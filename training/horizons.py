"""Targets over several bars ahead, for the multi-horizon presets.

For a sample whose window ends at bar ``t`` and a horizon of ``h`` bars:

- volume: ``log1p(volume[t + 1] + ... + volume[t + h])``, the total volume of the next
  ``h`` bars in base-asset units (``h = 1`` is the next bar's volume);
- direction: ``close[t + h] > close[t]``.

A target is NaN when one of its bars is missing or lies past the end of the history; the
dataset keeps only samples whose every horizon is defined (:func:`complete`). Pure numpy:
the arrays come from :class:`training.dataset.SeriesData`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def volume_sums(volume: np.ndarray, rows: np.ndarray, horizons: Sequence[int]) -> np.ndarray:
    """``(len(rows), len(horizons))``: log1p of the volume summed over bars ``t+1..t+h``."""
    missing = ~np.isfinite(volume)
    total = np.concatenate([[0.0], np.cumsum(np.where(missing, 0.0, volume))])
    holes = np.concatenate([[0], np.cumsum(missing)])
    out = np.full((len(rows), len(horizons)), np.nan)
    for j, h in enumerate(horizons):
        end = rows + 1 + h  # exclusive prefix index of bar t + h
        inside = end <= len(volume)
        start, stop = rows[inside] + 1, end[inside]
        whole = holes[stop] - holes[start] == 0
        summed = total[stop] - total[start]
        out[np.flatnonzero(inside)[whole], j] = np.log1p(np.maximum(summed[whole], 0.0))
    return out


def ups_at(close: np.ndarray, rows: np.ndarray, horizons: Sequence[int]) -> np.ndarray:
    """``(len(rows), len(horizons))``: 1.0 when ``close[t + h] > close[t]``, NaN if unknown."""
    out = np.full((len(rows), len(horizons)), np.nan)
    now = close[rows]
    for j, h in enumerate(horizons):
        ahead = rows + h
        inside = ahead < len(close)
        later = np.full(len(rows), np.nan)
        later[inside] = close[ahead[inside]]
        known = np.isfinite(later) & np.isfinite(now)
        out[known, j] = (later[known] > now[known]).astype(np.float64)
    return out


def complete(
    y_volume_sum: np.ndarray,
    y_up_at: np.ndarray,
    split: np.ndarray,
    split_of_last: np.ndarray,
) -> np.ndarray:
    """Samples with every horizon's targets defined whose last target bar is in the same
    split as the first (a target running into the purge gap or the next split would let
    a training label overlap the later split's input windows)."""
    defined = np.isfinite(y_volume_sum).all(axis=1) & np.isfinite(y_up_at).all(axis=1)
    return np.asarray(defined & (split_of_last == split))
