"""Bar completion: when a bar is ready to predict, and for which series.

A pure state machine: no I/O, no clock, no tasks. The bar loop feeds it what
happened (a bar stored, a feed started, a grace deadline passed, a flush taken)
and acts on what it answers. Every rule is here, unit-tested in milliseconds:

- **history**: a bar that closed before its exchange's feed started (more than
  ``grace_seconds`` before) fills windows but is not predicted, unless it is newer
  than the series' handover mark (``predicted_through``: the newest bar any replica
  published) - then no replica predicted it and this one does (**caught up**);
- **ready**: a live bar is predicted once every owned series of its timeframe that
  can still bring it has (a series that stored it already never comes again);
- **grace**: otherwise ``grace_seconds`` (wall time) after its first series arrived;
- **late**: a series arriving after its bar was predicted gets its own small batch;
- **older first**: before a series' next bar is stored (and overwrites its window),
  its pending bar is predicted;
- **fresh**: a "duplicate" the store reports newer than what was handed on was
  stored by an attempt whose reply was lost: it is this bar, not a replay;
- **drain**: at shutdown every bar with arrivals not yet predicted is flushed.

Times: ``wall`` is ``time.time()`` seconds (arrivals, deadlines); exchange time
(``now_ms``) only marks when a feed started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from whalecast.domain import Candle, Series

#: (timeframe, bar open time in ms): one bar across the owned series of a timeframe.
BarKey = tuple[str, int]
#: Bars of state kept per timeframe behind the newest one predicted, for late arrivals.
BARS_KEPT = 4


class StoredBars(Protocol):
    """What the window store holds (a read of its memory mirror, no I/O)."""

    def not_stored(self, series: Sequence[Series], open_ms: int) -> list[Series]: ...


@dataclass(frozen=True, slots=True)
class Arrival:
    """What to do about one stored bar of one series."""

    key: BarKey
    history: bool = False  # not predicted (it fills windows only)
    caught_up: bool = False  # before the start, but no replica predicted it
    late: bool = False  # its bar was predicted already: a batch of its own
    flush: bool = False  # predict the bar now
    deadline: float | None = None  # a new grace deadline (wall seconds) to wake at


@dataclass(frozen=True, slots=True)
class Take:
    """A batch to predict: the series (in the loop's order) of one bar not yet predicted."""

    key: BarKey
    series: list[Series]
    late: bool  # the bar's main batch was taken before
    candles: Mapping[Series, Candle]
    arrived: Mapping[Series, float]  # wall time each series' bar arrived


@dataclass(slots=True)
class _Bar:
    waiting: set[Series]  # series that can still bring this bar and have not yet
    arrived: dict[Series, float] = field(default_factory=dict)
    candles: dict[Series, Candle] = field(default_factory=dict)
    predicted: set[Series] = field(default_factory=set)
    main_done: bool = False
    deadline: float | None = None
    queued: bool = False  # a flush is on its way: it will take every arrival

    def pending(self) -> list[Series]:
        return [s for s in self.arrived if s not in self.predicted]


class BarCompletion:
    """Arrivals in, decisions out, for the owned series of one daemon."""

    def __init__(
        self,
        series: Sequence[Series],
        stored: StoredBars,
        *,
        grace_seconds: float,
        predicted_through: Mapping[Series, int] | None = None,
        stored_upto: Mapping[Series, int | None] | None = None,
    ) -> None:
        self.series = list(series)
        self.by_timeframe: dict[str, list[Series]] = {}
        for s in self.series:
            self.by_timeframe.setdefault(s.timeframe, []).append(s)
        self._order = {s: i for i, s in enumerate(self.series)}
        self.stored = stored
        self.grace_seconds = grace_seconds
        self.predicted_through = dict(predicted_through or {})
        # newest bar per series handed to the prediction side (a stored bar at start-up)
        upto = stored_upto or {}
        self._handed: dict[Series, int] = {s: upto.get(s) or -1 for s in self.series}
        self._started_ms: dict[str, int] = {}
        self._bars: dict[BarKey, _Bar] = {}

    def __len__(self) -> int:
        """Bars whose state is held (for late arrivals)."""
        return len(self._bars)

    # ------------------------------------------------------------------ feeds
    def started(self, exchange: str) -> bool:
        return exchange in self._started_ms

    def start(self, exchange: str, now_ms: int) -> None:
        """The exchange's first bars came in at exchange time ``now_ms``: older is history."""
        self._started_ms.setdefault(exchange, now_ms)

    # ---------------------------------------------------------------- arrivals
    def fresh(self, stored: Iterable[tuple[Candle, str]]) -> list[Candle]:
        """The candles of one store call (with the store's status each) that are new
        bars for the prediction side, in order; they are handed on from here."""
        out = [
            c
            for c, status in stored
            if status == "appended"
            or (status == "duplicate" and c.open_ms > self._handed[c.series])
        ]
        for c in out:
            self._handed[c.series] = c.open_ms
        return out

    def arrive(self, candle: Candle, wall: float) -> Arrival:
        """A fresh bar of one series is stored (its exchange must have :meth:`start`-ed)."""
        key = (candle.timeframe, candle.open_ms)
        caught_up = False
        if not self._closed_live(candle):
            mark = self.predicted_through.get(candle.series)
            if mark is None or candle.open_ms <= mark:
                return Arrival(key, history=True)
            caught_up = True
        bar = self._register(candle, wall)
        if bar.main_done:
            return Arrival(key, caught_up=caught_up, late=True, flush=True)
        if not bar.waiting:
            return Arrival(key, caught_up=caught_up, flush=True)
        if bar.deadline is None:
            bar.deadline = wall + self.grace_seconds
            return Arrival(key, caught_up=caught_up, deadline=bar.deadline)
        return Arrival(key, caught_up=caught_up)

    def resume(self, candle: Candle, wall: float) -> BarKey:
        """A bar stored before the start that no replica published: predicted as it is."""
        self._register(candle, wall)
        return (candle.timeframe, candle.open_ms)

    def due(self, wall: float) -> list[BarKey]:
        """Bars whose grace deadline has passed at ``wall``: predict them with what came."""
        keys = []
        for key, bar in self._bars.items():
            if bar.deadline is not None and bar.deadline <= wall:
                bar.deadline = None
                keys.append(key)
        return keys

    def completes(self, candles: Sequence[Candle]) -> tuple[BarKey, list[Series]] | None:
        """If storing ``candles`` will complete a live bar that is not predicted yet: the
        bar and the series of it stored before them, still to predict (the early pass)."""
        if not candles:
            return None
        first = candles[0]
        key = (first.timeframe, first.open_ms)
        if not self.started(first.exchange) or not self._closed_live(first):
            return None  # start-up, history or a catch-up: the usual path
        if any((c.timeframe, c.open_ms) != key for c in candles):
            return None
        bar = self._bars.get(key)
        if bar is not None and bar.main_done:
            return None  # a late batch
        waiting = bar.waiting if bar is not None else set(self._can_still_bring(key))
        if not {c.series for c in candles}.issuperset(waiting):
            return None  # the bar is predicted once the others are in
        return key, ([] if bar is None else bar.pending())

    # ---------------------------------------------------------------- flushing
    def queue(self, key: BarKey) -> bool:
        """A flush of ``key`` is wanted: True if one must be started (none is on its way)."""
        bar = self._bars.get(key)
        if bar is None:
            return True  # nothing to take: the flush finds so
        bar.deadline = None
        if bar.queued:
            return False
        bar.queued = True
        return True

    def take(self, key: BarKey) -> Take | None:
        """The bar's series that arrived and are not predicted yet, now counted as predicted."""
        bar = self._bars.get(key)
        if bar is None:
            return None
        bar.queued = False  # what arrives from now on needs another flush
        late = bar.main_done
        bar.main_done = True
        bar.deadline = None
        todo = sorted((s for s in bar.pending() if s in self._order), key=self._order.__getitem__)
        bar.predicted.update(todo)
        return Take(key, todo, late, bar.candles, bar.arrived)

    def older_pending(self, candles: Sequence[Candle]) -> list[BarKey]:
        """Bars, oldest first, to predict before ``candles`` (one bar) are stored: those
        where one of their series still waits to be predicted."""
        if not candles:
            return []
        incoming = {(c.timeframe, c.series) for c in candles}
        open_ms = candles[0].open_ms
        return [
            key
            for key, bar in sorted(self._bars.items(), key=lambda kv: kv[0][1])
            if key[1] < open_ms and any((key[0], s) in incoming for s in bar.pending())
        ]

    def unfinished(self) -> list[BarKey]:
        """Bars with arrivals not predicted yet (flushed at drain rather than dropped)."""
        return [key for key, bar in self._bars.items() if bar.pending()]

    def forget_old(self, key: BarKey) -> list[BarKey]:
        """Drop the state of bars more than :data:`BARS_KEPT` bars older than ``key``."""
        timeframe, open_ms = key
        horizon = open_ms - BARS_KEPT * self.by_timeframe[timeframe][0].bar_ms
        old = [k for k in self._bars if k[0] == timeframe and k[1] < horizon]
        for k in old:
            del self._bars[k]
        return old

    # ---------------------------------------------------------------- helpers
    def _closed_live(self, candle: Candle) -> bool:
        """The bar closed after its exchange's feed started (within the grace)."""
        started = self._started_ms.get(candle.exchange)
        return started is not None and candle.close_ms >= started - self.grace_seconds * 1000

    def _can_still_bring(self, key: BarKey) -> list[Series]:
        return self.stored.not_stored(self.by_timeframe[key[0]], key[1])

    def _register(self, candle: Candle, wall: float) -> _Bar:
        key = (candle.timeframe, candle.open_ms)
        bar = self._bars.get(key)
        if bar is None:
            bar = self._bars[key] = _Bar(waiting={*self._can_still_bring(key), candle.series})
        bar.arrived[candle.series] = wall
        bar.waiting.discard(candle.series)
        bar.candles[candle.series] = candle
        return bar
