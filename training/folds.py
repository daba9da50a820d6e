"""The walk-forward test windows: K consecutive windows ending at the data's end.

Kept apart from :mod:`training.walkforward` (which fits networks) so that anything that
only needs the windows, a probe of a simple model say, reads the very same cuts.
"""

from __future__ import annotations

from collections.abc import Sequence

from training.dataset import DAY_MS
from training.history import SeriesHistory


def fold_ends(histories: Sequence[SeriesHistory], folds: int, fold_days: float) -> list[int]:
    """The exclusive end (ms) of each fold's test window, oldest first; the last fold ends
    one bar after the shortest series' last bar."""
    if folds < 2:
        raise ValueError(f"walk-forward needs at least 2 folds, got {folds}")
    if fold_days <= 0:
        raise ValueError(f"fold_days must be positive, got {fold_days}")
    bar_ms = histories[0].series.bar_ms
    end = min(h.last_ms for h in histories) + bar_ms
    step = int(fold_days * DAY_MS) // bar_ms * bar_ms
    return [end - (folds - 1 - k) * step for k in range(folds)]


def fold_test_days(ends: Sequence[int], bar_ms: int) -> float:
    """The ``test_days`` that makes each fold's test targets exactly ``[its start, its end)``.

    The test period reaches back ``test_days`` from the last bar's open: one bar short of
    the fold's step, so the windows tile.
    """
    return (ends[1] - ends[0] - bar_ms) / DAY_MS
