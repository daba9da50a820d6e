"""The arithmetic of live scoring: pure functions and a rolling mean (no I/O, no state
beyond the window)."""

from __future__ import annotations

import math
from collections import deque


class Rolling:
    """Mean of the last ``size`` scores, O(1) per score.

    A running sum; it is recomputed exactly every ``size`` scores, so rounding
    errors cannot pile up over a long run.
    """

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.total = 0.0
        self._since_exact = 0

    def add(self, value: float) -> None:
        if len(self.values) == self.values.maxlen:
            self.total -= self.values[0]
        self.values.append(value)
        self.total += value
        self._since_exact += 1
        if self._since_exact >= len(self.values):
            self.total = math.fsum(self.values)
            self._since_exact = 0

    def mean(self) -> float:
        return self.total / len(self.values)


def direction_hit(p_up: float, close: float, close_next: float) -> float:
    return 1.0 if (p_up >= 0.5) == (close_next > close) else 0.0


def log_volume_error(predicted: float, actual: float) -> float:
    return abs(math.log1p(max(predicted, 0.0)) - math.log1p(max(actual, 0.0)))


def pinball(quantile: float, predicted: float, actual: float) -> float:
    """The pinball (quantile) loss of ``log1p`` volumes: ``max(q * e, (q - 1) * e)`` with
    ``e = log1p(actual) - log1p(predicted)``."""
    error = math.log1p(max(actual, 0.0)) - math.log1p(max(predicted, 0.0))
    return max(quantile * error, (quantile - 1.0) * error)


def brier(p_up: float, close: float, close_later: float) -> float:
    """``(p - y)^2``, ``y`` 1 when the later close is above ``close``."""
    return (p_up - (1.0 if close_later > close else 0.0)) ** 2
