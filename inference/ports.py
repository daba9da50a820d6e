"""What the bar loop needs of its collaborators, as protocols (no ``Any`` on the bar path).

Each is met by one real class, named in its docstring; the bar loop is typed
against these so its dependencies are visible in one place and checked by mypy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from inference.publisher import PredictionOut
from streamer.store_format import AppendResult, BarRecord
from streamer.store_plan import AppendPlan
from whalecast.domain import Candle, Series


class Clock(Protocol):
    """Exchange time (:class:`streamer.clock.Clock`)."""

    def now_ms(self) -> int: ...


class Store(Protocol):
    """The window store (:class:`streamer.store.WindowStore`)."""

    def plan(self, records: Sequence[BarRecord], allow_gap: bool = False) -> AppendPlan: ...

    async def commit(self, plan: AppendPlan) -> list[AppendResult]: ...

    async def append(
        self, records: Sequence[BarRecord], allow_gap: bool = False
    ) -> list[AppendResult]: ...

    def windows(self, series: Sequence[Series]) -> tuple[np.ndarray, np.ndarray]: ...

    def last_open_ms(self, series: Series) -> int | None: ...

    def last_open_times(self, series: Sequence[Series]) -> np.ndarray: ...

    def not_stored(self, series: Sequence[Series], open_ms: int) -> list[Series]: ...


class Publisher(Protocol):
    """Predictions to Redis (:class:`inference.publisher.Publisher`)."""

    async def publish(self, predictions: Sequence[PredictionOut]) -> int: ...

    async def not_yet_published(
        self, predictions: Sequence[PredictionOut]
    ) -> list[PredictionOut]: ...


class Scorer(Protocol):
    """Live scoring (:class:`inference.scoring.LiveScorer`)."""

    def stored(self, candles: Iterable[Candle]) -> None: ...

    def published(self, predictions: Sequence[PredictionOut]) -> None: ...
