"""Per-series ordering: every closed bar exactly once, in order, with no gap.

The sequencer knows, for each series, the last bar it emitted and the closed
bars that arrived early (after a missing one). It emits a bar only when the bar
before it has been emitted; a missing bar is asked for over REST (through the
``want_rest`` callback) and, once REST proves the exchange never had it (REST
shows a later bar but not this one), it is skipped and reported as a hole (``bars_missing``; the window store
counts the gap itself when the bar after the hole reaches it).

It does no I/O and keeps no clock of its own: callers pass exchange time
(``now_ms``) and wall time (``wall``) in, so every rule here is unit-testable.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from streamer.backoff import ceiling
from whalecast.domain import Candle, Series, floor_to_bar
from whalecast.logs import get_logger
from whalecast.metrics import Metrics

log = get_logger(__name__)

SOURCES = ("ws_flag", "next_bar", "rest")
#: After this many REST answers without the missing bar while the websocket
#: already delivered later ones, the missing bars are declared a hole.
WS_EVIDENCE_ATTEMPTS = 3

Emit = Callable[[Candle, str], None]


@dataclass(slots=True)
class _State:
    series: Series
    bar: int
    last_ms: int  # last emitted bar (or the baseline before the first one)
    pending: dict[int, tuple[Candle, str]] = field(default_factory=dict)
    forming: Candle | None = None
    rest_queued: bool = False
    attempts: int = 0  # REST answers in a row that did not bring the next bar
    retry_at: float = 0.0  # wall time before which REST is not asked again

    @property
    def expected_ms(self) -> int:
        return self.last_ms + self.bar

    def needs_rest(self, now_ms: int, grace_ms: int) -> bool:
        expected = self.expected_ms
        if expected in self.pending:
            return False
        if self.pending:
            return True  # a later bar is here, the expected one is not
        if self.forming is not None and self.forming.open_ms > expected:
            return True  # the exchange forms a later bar already
        return expected + self.bar + grace_ms <= now_ms  # deadline passed


@dataclass(frozen=True, slots=True)
class RestAnswer:
    """What one REST backfill showed for a series."""

    candles: Sequence[Candle]  # closed and valid, ascending
    seen_ms: Sequence[int]  # open times of every valid bar shown (closed or forming), ascending


class Sequencer:
    """Ordering and gap bookkeeping for the series of one exchange."""

    def __init__(
        self,
        start: Mapping[Series, int],
        metrics: Metrics,
        emit: Emit,
        want_rest: Callable[[Series], None],
        *,
        trust_next_bar: bool,
        retry_seconds: tuple[float, float],
    ) -> None:
        """``retry_seconds``: (initial, maximum) of the wait before a failed series' REST
        request is made again (:func:`streamer.backoff.ceiling`, no jitter)."""
        self._states = {s: _State(s, s.bar_ms, last) for s, last in start.items()}
        self._emit = emit
        self._want_rest = want_rest
        self._trust_next_bar = trust_next_bar
        self._retry_initial, self._retry_max = retry_seconds
        exchange = next(iter(start)).exchange if start else ""
        self._closed = {
            (tf, src): metrics.bars_closed.labels(exchange, tf, src)
            for tf in {s.timeframe for s in start}
            for src in SOURCES
        }
        self._backfilled = {
            tf: metrics.backfill_bars.labels(exchange, tf) for tf in {s.timeframe for s in start}
        }
        self._missing = {
            tf: metrics.bars_missing.labels(exchange, tf) for tf in {s.timeframe for s in start}
        }

    @staticmethod
    def baseline(
        series: Iterable[Series],
        resume_from: Mapping[Series, int | None],
        now_ms: int,
        warmup_bars: int,
    ) -> dict[Series, int]:
        """The "last emitted" bar per series before the first new one.

        A stored bar resumes after itself; otherwise ``warmup_bars`` closed bars
        are fetched (the baseline is the bar before the first of them).
        """
        start: dict[Series, int] = {}
        for s in series:
            stored = resume_from.get(s)
            if stored is not None:
                start[s] = floor_to_bar(stored, s.bar_ms)
            else:
                newest_closed = floor_to_bar(now_ms, s.bar_ms) - s.bar_ms
                start[s] = newest_closed - warmup_bars * s.bar_ms
        return start

    def last_ms(self, series: Series) -> int:
        return self._states[series].last_ms

    def expected_ms(self, series: Series) -> int:
        return self._states[series].expected_ms

    def closed(self, candle: Candle, source: str) -> str | None:
        """A closed bar arrived; returns a rejection reason or None."""
        st = self._states[candle.series]
        if candle.open_ms <= st.last_ms:
            return "duplicate" if candle.open_ms == st.last_ms else "out_of_order"
        if candle.open_ms in st.pending:
            return "duplicate"
        st.pending[candle.open_ms] = (candle, source)
        self._drain(st)
        if st.pending:
            self._gap(st)
        return None

    def forming(self, candle: Candle) -> str | None:
        """A still-forming update arrived; its appearance closes the bar before it."""
        st = self._states[candle.series]
        previous = st.forming
        if previous is not None and candle.open_ms < previous.open_ms:
            return "out_of_order"
        if candle.open_ms <= st.last_ms:
            return None  # a late update of a bar REST already delivered: nothing to do
        st.forming = candle
        if previous is not None and previous.open_ms < candle.open_ms:
            known = previous.open_ms <= st.last_ms or previous.open_ms in st.pending
            if not known and self._trust_next_bar:
                self.closed(replace(previous, closed=True), "next_bar")
        if st.expected_ms < candle.open_ms and st.expected_ms not in st.pending:
            self._gap(st)
        return None

    def rest_answer(self, series: Series, answer: RestAnswer, wall: float) -> None:
        """Applies a REST answer for the bars from the expected one on."""
        st = self._states[series]
        st.rest_queued = False
        before = st.last_ms
        for candle in answer.candles:
            if candle.open_ms > st.last_ms and candle.open_ms not in st.pending:
                st.pending[candle.open_ms] = (candle, "rest")
        self._drain(st)
        self._skip_hole(st, answer.seen_ms)
        if st.last_ms > before:
            st.attempts = 0
            st.retry_at = 0.0
        else:
            self.rest_failed(series, wall)

    def rest_failed(self, series: Series, wall: float) -> None:
        st = self._states[series]
        st.rest_queued = False
        st.attempts += 1
        st.retry_at = wall + ceiling(self._retry_initial, self._retry_max, st.attempts - 1)

    def request_due(self, now_ms: int, grace_ms: int, wall: float) -> int:
        """Asks REST for every series whose expected bar is overdue or missing; returns how many."""
        asked = 0
        for st in self._states.values():
            if st.rest_queued or wall < st.retry_at or not st.needs_rest(now_ms, grace_ms):
                continue
            st.rest_queued = True
            self._want_rest(st.series)
            asked += 1
        return asked

    def next_deadline_ms(self, grace_ms: int) -> int:
        """The earliest exchange time at which a deadline could fire (a lower bound)."""
        if not self._states:
            return 2**62
        return min(st.expected_ms + st.bar for st in self._states.values()) + grace_ms

    def startup(self, now_ms: int) -> None:
        """Start-up backfill: every series whose next bar has closed already."""
        for st in self._states.values():
            if st.expected_ms + st.bar <= now_ms:
                st.rest_queued = True
                self._want_rest(st.series)

    def reconnected(self, series: Iterable[Series], now_ms: int) -> None:
        """After a reconnect: backfill at once every bar that closed while we were away."""
        for s in series:
            st = self._states[s]
            st.forming = None
            if st.expected_ms + st.bar <= now_ms and st.expected_ms not in st.pending:
                st.retry_at = 0.0
                self._gap(st)

    def _drain(self, st: _State) -> None:
        while (item := st.pending.pop(st.expected_ms, None)) is not None:
            candle, source = item
            st.last_ms = candle.open_ms
            self._closed[(candle.timeframe, source)].inc()
            if source == "rest":
                self._backfilled[candle.timeframe].inc()
            self._emit(candle, source)

    def _gap(self, st: _State) -> None:
        if not st.rest_queued:
            st.rest_queued = True
            self._want_rest(st.series)

    def _skip_hole(self, st: _State, seen_ms: Sequence[int]) -> None:
        """Skips bars the exchange does not have, when there is proof of later ones."""
        expected = st.expected_ms
        if expected in st.pending:
            return
        index = bisect.bisect_left(seen_ms, expected)
        rest_next = seen_ms[index] if index < len(seen_ms) else None
        ws_next = min(st.pending) if st.pending else None
        if rest_next == expected:
            return  # the exchange has it (still forming, or not valid yet): ask again later
        if rest_next is not None:
            resume = rest_next if ws_next is None else min(rest_next, ws_next)
        elif ws_next is not None and st.attempts + 1 >= WS_EVIDENCE_ATTEMPTS:
            resume = ws_next
        else:
            return
        missing = (resume - expected) // st.bar
        self._missing[st.series.timeframe].inc(missing)
        log.warning("exchange has no bars here: skipped", series=st.series.tag,
                    from_ms=expected, to_ms=resume, bars=missing)  # fmt: skip
        st.last_ms = resume - st.bar
        self._drain(st)
