"""The bar loop: the daemon's heartbeat.

Closed candles come in from the feeds (``on_closed``). For each bar the loop
appends every series' record to the window store in one pipeline, then waits
until every owned series of that timeframe has closed the bar (those that had
stored it already are not waited for), or until ``grace_seconds`` (wall time)
after the first of them arrived. It then takes
the complete windows from the store's memory mirror, runs one forward pass per
served model over the whole batch in a worker thread (the event loop keeps
reading feeds), and publishes all predictions in one pipeline. When one batch of
candles completes a bar, that pass starts while Redis stores them, on the windows the
store forecasts, and is used only if the stored windows are exactly those
(:mod:`inference.forward`). After publishing, it primes each model's recurrent state
from the windows' older rows for the next bar (:mod:`inference.incremental`, off the
critical path), so the next bar's pass is one step per series wherever the state
still matches. A series whose
bar arrives after its batch was predicted gets its own small late batch; a
series whose window is incomplete is counted as not ready and never predicted
from padding.

Redis going away (down, restarting, timing out) never stops the loop and never
loses a bar: candles the store could not take stay in a backlog and predictions
the publisher could not send stay queued, both retried in order (capped
backoff) until Redis answers again; the store skips what it already holds, so
nothing is stored or predicted twice.

Bars closing before the daemon started (start-up backfill) are history: they
fill the windows but are not predicted, unless they are newer than the series'
handover mark (``predicted_through``: the newest bar any replica published,
see :mod:`inference.handover`), in which case no replica predicted them and
this one does. After start, every stored bar is predicted exactly once per
model; bars arriving in a burst (after an outage) are predicted one bar at a
time, each from its own window. :meth:`BarLoop.resume` predicts, before the
feeds start, bars a previous owner stored but did not publish.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import structlog
from redis.exceptions import RedisError

from inference.forward import Batch, ForwardPasses
from inference.publisher import PredictionOut
from streamer.backoff import Backoff
from whalecast.domain import Candle, Series, WhaleBar
from whalecast.logs import get_logger
from whalecast.metrics import Metrics

log = get_logger(__name__)

#: Failures after which the loop keeps what it could not write and retries it.
REDIS_DOWN = (RedisError, OSError)
REDIS_RETRY_MAX_SECONDS = 5.0
#: Stored bars held for the scorer until the next publish, at most.
OUTCOMES_HELD_MAX = 100_000


class Clock(Protocol):
    def now_ms(self) -> int: ...


@dataclass
class _BarState:
    """Arrivals of one bar (timeframe, open time) across the owned series."""

    waiting: set[Series]  # series that can still bring this bar and have not yet
    arrived: dict[Series, float] = field(default_factory=dict)  # wall time (time.time)
    candles: dict[Series, Candle] = field(default_factory=dict)
    predicted: set[Series] = field(default_factory=set)
    main_done: bool = False
    deadline: asyncio.TimerHandle | None = None
    flush_queued: bool = False  # a flush task waits for the lock: it will take every arrival
    runtimes: dict[str, Any] | None = None  # the model versions every batch of this bar uses


class BarLoop:
    """Turns closed bars into stored windows and published predictions."""

    def __init__(
        self,
        *,
        series: Sequence[Series],
        store: Any,
        models: Any,
        publisher: Any,
        metrics: Metrics,
        clock_for: Callable[[str], Clock],
        grace_seconds: float,
        whale_for: Callable[[Series, int], WhaleBar],
        scorer: Any | None = None,
        record_factory: Callable[[Candle, WhaleBar], Any],
        predicted_through: Mapping[Series, int] | None = None,
        retry_initial_seconds: float = 0.1,
    ) -> None:
        self.series = list(series)
        self.by_timeframe: dict[str, frozenset[Series]] = {}
        for s in self.series:
            self.by_timeframe[s.timeframe] = self.by_timeframe.get(s.timeframe, frozenset()) | {s}
        self.store = store
        self.models = models
        self.publisher = publisher
        self.metrics = metrics
        self.clock_for = clock_for
        self.grace_seconds = grace_seconds
        self.whale_for = whale_for
        self.scorer = scorer
        self.record_factory = record_factory
        self.predicted_through = dict(predicted_through or {})
        self._started_ms: dict[str, int] = {}
        self._bars: dict[tuple[str, int], _BarState] = {}
        self._lock = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()
        self.stopping = False
        # what Redis could not take yet: records by bar open time (with their arrival time),
        # predictions in order
        self._backlog: dict[int, list[tuple[Any, float]]] = {}
        self._unpublished: list[PredictionOut] = []
        self._retry_task: asyncio.Task[None] | None = None
        self._retry_initial = min(retry_initial_seconds, REDIS_RETRY_MAX_SECONDS)
        self._position = {s: i for i, s in enumerate(self.series)}  # the state caches' index
        self.passes = ForwardPasses(metrics)
        self._outcomes: list[tuple[Series, int, float, float]] = []  # bars the scorer has not seen
        # newest bar per series handed to the prediction side (a stored bar at start-up)
        self._arrived_upto = {s: store.last_open_ms(s) or -1 for s in self.series}

    # ------------------------------------------------------------------ input
    async def on_closed(self, candles: Sequence[Candle]) -> None:
        """Feed callback: closed, validated candles, in order per series.

        Never raises for Redis being away: what could not be stored is kept and retried.
        """
        if self.stopping or not candles:
            return
        arrival = time.time()
        for c in candles:  # the whale aggregates as they are now, even if Redis takes it later
            record = self.record_factory(c, self.whale_for(c.series, c.open_ms))
            self._backlog.setdefault(c.open_ms, []).append((record, arrival))
        await self._store_backlog()

    async def _store_backlog(self) -> bool:
        """Store (and predict) the backlog one bar at a time, oldest first; False if Redis failed."""
        while True:
            async with self._lock:
                if not self._backlog:
                    return True
                open_ms = min(self._backlog)
                group = self._backlog.pop(open_ms)
                try:
                    await self._flush_older([r.candle for r, _ in group])
                    await self._store(group)
                except REDIS_DOWN as e:
                    self._backlog[open_ms] = group + self._backlog.get(open_ms, [])
                    self._redis_failed("append", e)
                    return False

    async def _store(self, group: list[tuple[Any, float]]) -> None:
        records = [r for r, _ in group]
        arrivals = {id(r.candle): arrival for r, arrival in group}
        results = await self.store.append(records, preview=self._early_pass(records))
        status = {id(r): res.status for r, res in zip(records, results, strict=True)}
        retry = [r for r in records if status[id(r)] == "gap"]
        if retry:
            # the feed already backfilled what the exchange has: the hole is real
            # (the store counted the gap when it reported it)
            for r, res in zip(retry, await self.store.append(retry, allow_gap=True), strict=True):
                status[id(r)] = res.status
        # a "duplicate" newer than what was handed on was stored by an attempt that failed
        # before it was confirmed (Redis went away mid-pipeline): it is this bar, not a replay
        fresh = [
            r.candle
            for r in records
            if status[id(r)] == "appended"
            or (status[id(r)] == "duplicate" and r.candle.open_ms > self._arrived_upto[r.series])
        ]
        if self.scorer is not None:  # scored after the next publish, off the critical path
            self._outcomes.extend((c.series, c.open_ms, c.close, c.volume) for c in fresh)
            if len(self._outcomes) > OUTCOMES_HELD_MAX:  # a long backfill: no publish comes
                self._score([])
        for candle in fresh:
            self._arrived_upto[candle.series] = candle.open_ms
            self._arrive(candle, arrivals[id(candle)])

    def _early_pass(self, records: list[Any]) -> Callable[[list[Series], np.ndarray], None] | None:
        """If these records complete a live bar, a store preview that starts the bar's
        forward pass while Redis stores them (:mod:`inference.forward`); else None."""
        first = records[0].candle if records else None
        if self.stopping or first is None:
            return None
        key = (first.timeframe, first.open_ms)
        started = self._started_ms.get(first.exchange)
        if started is None or not self._closed_live(first, started):
            return None  # start-up, history or a catch-up: the usual path
        if any((r.candle.timeframe, r.candle.open_ms) != key for r in records):
            return None
        state = self._bars.get(key)
        if state is not None and state.main_done:
            return None  # a late batch
        waiting = state.waiting if state is not None else self._can_still_bring(key)
        if not {r.series for r in records}.issuperset(waiting):
            return None  # the bar is predicted once the others are in
        earlier = [] if state is None else [s for s in state.arrived if s not in state.predicted]
        runtimes = self.models.serving()

        def preview(series: list[Series], windows: np.ndarray) -> None:
            if earlier:  # stored before: their windows are the mirror's
                series = earlier + series
                windows = np.concatenate([self.store.windows(earlier)[0], windows])
            complete = np.isfinite(windows).all(axis=(1, 2))
            order = sorted((self._position[s], j) for j, s in enumerate(series) if complete[j])
            if order:
                rows = np.fromiter((j for _, j in order), np.intp, len(order))
                positions = np.fromiter((p for p, _ in order), np.intp, len(order))
                batch = [series[j] for _, j in order]
                self.passes.start_early(Batch(key, runtimes, batch, windows[rows], positions))

        return preview

    def _is_history(self, candle: Candle) -> bool:
        """A bar that closed before the daemon started and that a replica already handled.

        It fills windows, it is not predicted. A bar newer than the series' handover
        mark is not history: no replica published it (a takeover or restart caught up).
        """
        started = self._started_ms.get(candle.exchange)
        if started is None:
            # exchange time when this exchange's first bars came in (its feed has started)
            started = self._started_ms[candle.exchange] = self.clock_for(candle.exchange).now_ms()
        if self._closed_live(candle, started):
            return False
        mark = self.predicted_through.get(candle.series)
        if mark is not None and candle.open_ms > mark:
            self.metrics.bars_caught_up.labels(candle.timeframe).inc()
            return False
        return True

    def _closed_live(self, candle: Candle, started_ms: int) -> bool:
        """The bar closed after its exchange's feed started (within the grace)."""
        return candle.close_ms >= started_ms - self.grace_seconds * 1000

    def _can_still_bring(self, key: tuple[str, int]) -> list[Series]:
        """The series of the bar's timeframe that have not stored it: the loop waits only
        for these (one already stored, predicted before a restart or ahead in a burst,
        never comes again)."""
        return self.store.not_stored(list(self.by_timeframe[key[0]]), key[1])

    def _register(self, candle: Candle, arrival: float) -> tuple[tuple[str, int], _BarState]:
        key = (candle.timeframe, candle.open_ms)
        state = self._bars.get(key)
        if state is None:
            state = _BarState(waiting={*self._can_still_bring(key), candle.series})
            self._bars[key] = state
        state.arrived[candle.series] = arrival
        state.waiting.discard(candle.series)
        state.candles[candle.series] = candle
        return key, state

    def _arrive(self, candle: Candle, arrival: float) -> None:
        if self._is_history(candle):
            self.metrics.history_bars.labels(candle.timeframe).inc()
            return
        key, state = self._register(candle, arrival)
        if state.main_done:
            self.metrics.late_series.labels(candle.timeframe).inc()
            self._schedule(key)
        elif not state.waiting:
            self._schedule(key)
        elif state.deadline is None:
            loop = asyncio.get_running_loop()
            state.deadline = loop.call_later(self.grace_seconds, self._schedule, key)

    def _schedule(self, key: tuple[str, int]) -> None:
        state = self._bars.get(key)
        if state is not None:
            if state.deadline is not None:
                state.deadline.cancel()
                state.deadline = None
            if state.flush_queued:
                return  # one queued flush per bar, not one per arriving series
            state.flush_queued = True
        task = asyncio.get_running_loop().create_task(self._flush_locked(key))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_older(self, group: list[Candle]) -> None:
        """Before a series' next bar overwrites its window, predict its pending bar."""
        incoming = {(c.timeframe, c.series) for c in group}
        open_ms = group[0].open_ms
        for key, state in sorted(self._bars.items(), key=lambda kv: kv[0][1]):
            if key[1] >= open_ms or len(state.predicted) == len(state.arrived):
                continue  # newer, or nothing of it waits (predicted is a subset of arrived)
            waiting = {s for s in state.arrived if s not in state.predicted}
            if any((key[0], s) in incoming for s in waiting):
                await self._flush(key)

    async def resume(self, candles: Sequence[Candle]) -> None:
        """Predict now stored bars that a previous owner did not publish (before feeds start).

        ``candles`` are the series' newest stored bars (:func:`inference.handover.pending`),
        already in the store and its mirror: nothing is appended, each bar is predicted
        from the stored window, one batch per bar.
        """
        arrival = time.time()
        for open_ms in sorted({c.open_ms for c in candles}):
            async with self._lock:
                keys = set()
                for candle in candles:
                    if candle.open_ms == open_ms:
                        keys.add(self._register(candle, arrival)[0])
                        self.metrics.bars_caught_up.labels(candle.timeframe).inc()
                for key in sorted(keys):
                    await self._flush(key)

    def prime(self, runtimes: Mapping[str, Any] | None = None) -> None:
        """Prime ``runtimes`` (default: the serving ones) from the windows held now, so
        the next bar steps: at start-up, and for a version parked for the next swap."""
        chosen = dict(runtimes) if runtimes is not None else self.models.serving()
        windows, ready = self.store.windows(self.series)
        if chosen and ready.any():
            self.passes.start_priming(chosen, windows[ready], np.flatnonzero(ready))

    # ----------------------------------------------------------------- output
    async def _flush_locked(self, key: tuple[str, int]) -> None:
        try:
            async with self._lock:
                await self._flush(key)
        except Exception as e:  # noqa: BLE001 - loop boundary: one bad bar must not stop the daemon
            log.error("bar failed", timeframe=key[0], bar_open_ms=key[1], error=repr(e))

    async def _flush(self, key: tuple[str, int]) -> None:
        state = self._bars.get(key)
        if state is None:
            return
        state.flush_queued = False  # what arrives from now on needs another flush
        todo = [s for s in self.series if s in state.arrived and s not in state.predicted]
        late = state.main_done
        state.main_done = True
        if state.deadline is not None:
            state.deadline.cancel()
            state.deadline = None
        if todo:
            state.predicted.update(todo)
            with structlog.contextvars.bound_contextvars(timeframe=key[0], bar_open_ms=key[1]):
                await self._predict_and_publish(key, todo, state, late)
        self._forget_old(key)

    async def _predict_and_publish(
        self, key: tuple[str, int], todo: list[Series], state: _BarState, late: bool
    ) -> None:
        timeframe, open_ms = key
        if state.runtimes is None:
            # a new bar: only here may a reloaded version come in; late batches of this bar
            # use the same versions as its main batch
            self.models.swap_pending()
            state.runtimes = self.models.serving()
        windows, ready = self.store.windows(todo)
        current = self.store.last_open_times(todo) == open_ms
        ready = ready & current
        batch = [s for s, ok in zip(todo, ready, strict=True) if ok]
        not_ready = len(todo) - len(batch)
        if not_ready:
            self.metrics.not_ready.labels(timeframe).inc(not_ready)
        outputs: list[PredictionOut] = []
        timings: dict[str, float] = {}
        x = windows[ready]
        positions = np.fromiter((self._position[s] for s in batch), np.intp, len(batch))
        if batch:
            results = await self.passes.run(Batch(key, state.runtimes, batch, x, positions))
            for name, runtime in state.runtimes.items():
                values, _stepped, timings[name] = results[name]
                outputs.extend(self._outputs(runtime, batch, values, open_ms, state))
        published = await self._publish(outputs)
        done = time.time()  # published: what follows is bookkeeping
        if self.scorer is not None:
            self._score(outputs)
        latency = done - max(state.arrived[s] for s in todo)
        if outputs:
            self.metrics.bar_latency.labels(timeframe).observe(latency)
            self.metrics.last_publish.labels(timeframe).set(time.time())
        self.metrics.bars_processed.labels(timeframe).inc()
        self.metrics.series_ready.labels(timeframe).set(len(batch))
        log.info(
            "bar", series=len(todo), predicted=len(batch), not_ready=not_ready, late=late,
            published=published, latency_ms=round(latency * 1000, 2),
            inference_ms={k: round(v * 1000, 2) for k, v in timings.items()},
        )  # fmt: skip
        if batch:
            self.passes.start_priming(state.runtimes, x, positions)

    def _score(self, outputs: list[PredictionOut]) -> None:
        """Score earlier predictions against the bars stored since, then keep these (a
        prediction is kept only once the scorer has seen the bar it was made from)."""
        assert self.scorer is not None
        outcomes, self._outcomes = self._outcomes, []
        self.scorer.observe_bars(outcomes)
        if outputs:
            self.scorer.expect(outputs)

    async def _publish(self, outputs: list[PredictionOut]) -> int:
        """Publish after whatever is still queued; all of it stays queued if Redis fails."""
        retrying = bool(self._unpublished)
        self._unpublished.extend(outputs)
        if not self._unpublished:
            return 0
        try:
            if retrying:  # the failed attempt may have gone through with its reply lost
                self._unpublished = await self.publisher.not_yet_published(self._unpublished)
            sent = await self.publisher.publish(self._unpublished)
        except REDIS_DOWN as e:
            self._redis_failed("publish", e)
            return 0
        self._unpublished = []
        return int(sent)

    def _redis_failed(self, operation: str, error: BaseException) -> None:
        bars = sum(len(group) for group in self._backlog.values())
        log.error(
            "redis unavailable, kept for retry", operation=operation, error=repr(error),
            candles_waiting=bars, predictions_waiting=len(self._unpublished),
        )  # fmt: skip
        if self._retry_task is None or self._retry_task.done():
            # a fresh context: the retry belongs to no one bar's log fields
            self._retry_task = asyncio.get_running_loop().create_task(
                self._retry(), context=contextvars.Context()
            )

    async def _retry(self) -> None:
        """Until Redis takes everything kept: queued predictions first, then the backlog."""
        backoff = Backoff(self._retry_initial, REDIS_RETRY_MAX_SECONDS, reset_after=60.0)
        while self._unpublished or self._backlog:
            await asyncio.sleep(backoff.delay())
            async with self._lock:
                await self._publish([])
            if not self._unpublished:
                await self._store_backlog()
        log.info("redis back, everything kept has been written")

    def _outputs(
        self, runtime: Any, batch: list[Series], values: np.ndarray, open_ms: int, state: _BarState
    ) -> list[PredictionOut]:
        candles, arrived = state.candles, state.arrived
        model, version, target = runtime.model, runtime.version, runtime.target
        return [
            PredictionOut(
                s, open_ms, candles[s].close_ms, model, version, target, value, arrived[s]
            )
            for s, value in zip(batch, values.tolist(), strict=True)
        ]

    def _forget_old(self, key: tuple[str, int]) -> None:
        """Keep a few bars of state per timeframe, for late arrivals, and every bar with
        series arrived and not predicted yet (its flush is queued or its deadline runs:
        one exchange's burst may trail the others' by more than those few bars)."""
        timeframe, open_ms = key
        horizon = open_ms - 4 * next(iter(self.by_timeframe[timeframe])).bar_ms
        done = [
            k
            for k, state in self._bars.items()
            if k[0] == timeframe and k[1] < horizon and len(state.predicted) == len(state.arrived)
        ]
        for old in done:
            state = self._bars.pop(old)
            if state.deadline is not None:
                state.deadline.cancel()

    # -------------------------------------------------------------- lifecycle
    async def drain(self, timeout_seconds: float) -> bool:
        """Stop taking bars; finish what is in flight. True if it finished in time."""
        self.stopping = True
        for key, state in list(self._bars.items()):
            if any(s not in state.predicted for s in state.arrived):
                self._schedule(key)  # predict what arrived rather than drop it
        pending: list[Awaitable[Any]] = list(self._flushes)
        if self._retry_task is not None and not self._retry_task.done():
            pending.append(self._retry_task)
        if not pending:
            await self.passes.settle()
            return True
        _done, not_done = await asyncio.wait(pending, timeout=timeout_seconds)  # type: ignore[type-var]
        if not_done and self._retry_task is not None:
            self._retry_task.cancel()
            log.error(
                "stopping with writes redis did not take", predictions=len(self._unpublished),
                candles=sum(len(group) for group in self._backlog.values()),
            )  # fmt: skip
        await self.passes.settle()
        return not not_done
