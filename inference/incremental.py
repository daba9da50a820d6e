"""Incremental forward passes: each series' primed recurrent state, kept between bars.

The split itself (prime the state after the older ``W-1`` rows, then one step for the
newest row) is :mod:`whalecast.keras_split` under the TensorFlow backends and the
artifact's ONNX prime and step graphs under the ``onnx`` backend
(:mod:`inference.onnx_serving`); both are :class:`Stepper`. The runtime checks
prime-then-step against the full pass (1e-5) at load, and serves a model whose
split fails or differs by full passes only.

:class:`StateCache` keeps, per series, the state and the exact scaled rows it was
computed from. A state is used only when the series' window now starts with exactly
those rows (bit for bit); anything else (a gap, a reload of the store, a late bar, a
series that was not ready) falls back to the full window for that series, never to a
stale state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Stepper(Protocol):
    """A model split into prime (the older rows to states) and step (the newest row)."""

    def prime(self, older: np.ndarray) -> list[np.ndarray]:
        """States ``[(n, units), ...]`` after the scaled rows ``older`` ``(n, W-1, f)``."""

    def step(self, newest: np.ndarray, states: Sequence[np.ndarray]) -> np.ndarray:
        """Raw model output ``(n,)`` for the newest scaled rows ``(n, 1, f)`` from ``states``."""


class StateCache:
    """Per series position: a primed state and the exact scaled rows it was primed from."""

    def __init__(self) -> None:
        self._rows: np.ndarray | None = None  # (capacity, W-1, f)
        self._states: list[np.ndarray] = []
        self._valid = np.zeros(0, dtype=bool)

    def put(self, positions: np.ndarray, older: np.ndarray, states: Sequence[np.ndarray]) -> None:
        self._grow(int(positions.max()) + 1 if len(positions) else 0, older, states)
        assert self._rows is not None or not len(positions)
        if len(positions):
            self._rows[positions] = older  # type: ignore[index]
            for kept, new in zip(self._states, states, strict=True):
                kept[positions] = new
            self._valid[positions] = True

    def match(self, positions: np.ndarray, older: np.ndarray) -> np.ndarray:
        """Which of ``positions`` hold a state primed from exactly ``older`` ``(n, W-1, f)``."""
        hit = np.zeros(len(positions), dtype=bool)
        if self._rows is None or not len(positions):
            return hit
        known = positions < len(self._valid)
        known[known] = self._valid[positions[known]]
        if known.any() and self._rows.shape[1:] == older.shape[1:]:
            same = self._rows[positions[known]] == older[known]
            hit[known] = same.reshape(len(same), -1).all(axis=1)
        return hit

    def states(self, positions: np.ndarray) -> list[np.ndarray]:
        return [kept[positions] for kept in self._states]

    def _grow(self, size: int, older: np.ndarray, states: Sequence[np.ndarray]) -> None:
        if size <= len(self._valid):
            return
        size = max(size, 2 * len(self._valid))
        rows = np.zeros((size, *older.shape[1:]), dtype=np.float32)
        kept = [np.zeros((size, *s.shape[1:]), dtype=np.float32) for s in states]
        if self._rows is not None:
            old = len(self._valid)
            rows[:old] = self._rows
            for new, previous in zip(kept, self._states, strict=True):
                new[:old] = previous
        valid = np.zeros(size, dtype=bool)
        valid[: len(self._valid)] = self._valid
        self._rows, self._states, self._valid = rows, kept, valid
