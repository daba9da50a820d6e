"""The Redis outbox: what Redis could not take yet, and the rules for handing it over.

Redis going away (down, restarting, timing out) never stops the bar loop and never
loses a bar. Two things wait here until it answers again:

- **the stored-bar backlog**: records the window store did not confirm, grouped by
  bar and handed back oldest bar first (a series' bars reach the store in order, and
  each bar is predicted from its own window before the next overwrites it); a bar
  that failed again goes back in front of what arrived for it since;
- **unpublished predictions**, in the order they were made; new ones queue behind
  them. Once an attempt failed, the next one first asks which of them did go through
  (the failed attempt's reply may be what was lost), so none is published twice.

During an outage the retry publishes first and stores the backlog only once no
prediction waits; its delays follow one capped backoff per outage.

A pure object: no I/O and no clock. The bar loop does the writing and reports back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar

from inference.publisher import PredictionOut
from streamer.backoff import Backoff
from whalecast.domain import Candle

REDIS_RETRY_MAX_SECONDS = 5.0
#: A healthy minute: the next outage's retries start from the initial delay again.
RETRY_RESET_AFTER_SECONDS = 60.0


class Record(Protocol):
    """A bar record for the window store (one closed candle and what it carries)."""

    @property
    def candle(self) -> Candle: ...


R = TypeVar("R", bound=Record)
#: One record and the wall time its candle arrived.
Kept = tuple[R, float]


class Outbox(Generic[R]):
    """Stored-bar backlog and unpublished predictions, in order, until Redis takes them."""

    def __init__(self, retry_initial_seconds: float = 0.1) -> None:
        self.retry_initial = min(retry_initial_seconds, REDIS_RETRY_MAX_SECONDS)
        self._backlog: dict[int, list[Kept[R]]] = {}  # by bar open time
        self._unpublished: list[PredictionOut] = []

    # ----------------------------------------------------------------- backlog
    def keep(self, records: Iterable[R], arrival: float) -> None:
        """Records to store, arrived at wall time ``arrival`` (behind those kept before)."""
        for record in records:
            self._backlog.setdefault(record.candle.open_ms, []).append((record, arrival))

    def next_bar(self) -> list[Kept[R]] | None:
        """The oldest bar's records (taken out: hand them back with :meth:`store_failed`)."""
        if not self._backlog:
            return None
        return self._backlog.pop(min(self._backlog))

    def store_failed(self, group: list[Kept[R]]) -> None:
        """The store did not take ``group`` (one bar): first in line again for its bar."""
        if group:
            open_ms = group[0][0].candle.open_ms
            self._backlog[open_ms] = group + self._backlog.get(open_ms, [])

    # ------------------------------------------------------------- predictions
    def to_publish(self, outputs: Iterable[PredictionOut]) -> tuple[list[PredictionOut], bool]:
        """Everything to publish now: what waits, then ``outputs``; and whether to ask
        first which of it did go through (something waited: an attempt failed). Until
        :meth:`published`, all of it stays queued."""
        check = bool(self._unpublished)
        self._unpublished.extend(outputs)
        return list(self._unpublished), check

    def narrowed(self, remaining: list[PredictionOut]) -> None:
        """Of what waits, only ``remaining`` has not gone through."""
        self._unpublished = list(remaining)

    def published(self) -> None:
        """Redis took everything :meth:`to_publish` gave."""
        self._unpublished = []

    # ------------------------------------------------------------------- retry
    def retry_delays(self) -> Iterator[float]:
        """Seconds to wait before each retry of one outage (capped, jittered backoff)."""
        backoff = Backoff(self.retry_initial, REDIS_RETRY_MAX_SECONDS, RETRY_RESET_AFTER_SECONDS)
        while True:
            yield backoff.delay()

    @property
    def empty(self) -> bool:
        return not self._unpublished and not self._backlog

    @property
    def may_store(self) -> bool:
        """A retry stores the backlog only once no prediction waits."""
        return not self._unpublished

    @property
    def candles_waiting(self) -> int:
        return sum(len(group) for group in self._backlog.values())

    @property
    def predictions_waiting(self) -> int:
        return len(self._unpublished)
