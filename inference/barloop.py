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
from typing import Any, Protocol

import numpy as np
import structlog
from redis.exceptions import RedisError

from inference.completion import BarCompletion, BarKey, Take
from inference.forward import Runtime
from inference.outbox import Outbox
from inference.predictor import Predictor
from inference.publisher import PredictionOut
from streamer.store import AppendPlan
from whalecast.domain import Candle, Series, WhaleBar
from whalecast.logs import get_logger
from whalecast.metrics import Metrics

log = get_logger(__name__)

#: Failures after which the loop keeps what it could not write and retries it.
REDIS_DOWN = (RedisError, OSError)
#: Stored bars held for the scorer until the next publish, at most.
OUTCOMES_HELD_MAX = 100_000


class Clock(Protocol):
    def now_ms(self) -> int: ...


class BarLoop:
    """Turns closed bars into stored windows and published predictions."""

    def __init__(
        self,
        *,
        series: Sequence[Series],
        store: Any,
        predictor: Predictor,
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
        self.store = store
        self.predictor = predictor
        self.publisher = publisher
        self.metrics = metrics
        self.clock_for = clock_for
        self.whale_for = whale_for
        self.scorer = scorer
        self.record_factory = record_factory
        self.bars = BarCompletion(
            self.series, store, grace_seconds=grace_seconds, predicted_through=predicted_through,
            stored_upto={s: store.last_open_ms(s) for s in self.series},
        )  # fmt: skip
        self._lock = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()
        self.stopping = False
        # what Redis could not take yet: records by bar open time (with their arrival time),
        # predictions in order
        self.outbox: Outbox[Any] = Outbox(retry_initial_seconds)
        self._retry_task: asyncio.Task[None] | None = None
        self._outcomes: list[tuple[Series, int, float, float]] = []  # bars the scorer has not seen

    # ------------------------------------------------------------------ input
    async def on_closed(self, candles: Sequence[Candle]) -> None:
        """Feed callback: closed, validated candles, in order per series.

        Never raises for Redis being away: what could not be stored is kept and retried.
        """
        if self.stopping or not candles:
            return
        arrival = time.time()
        # the whale aggregates as they are now, even if Redis takes it later
        self.outbox.keep(
            (self.record_factory(c, self.whale_for(c.series, c.open_ms)) for c in candles), arrival
        )
        await self._store_backlog()

    async def _store_backlog(self) -> bool:
        """Store (and predict) the backlog one bar at a time, oldest first; False if Redis failed."""
        while True:
            async with self._lock:
                group = self.outbox.next_bar()
                if group is None:
                    return True
                try:
                    await self._flush_older([r.candle for r, _ in group])
                    await self._store(group)
                except REDIS_DOWN as e:
                    self.outbox.store_failed(group)
                    self._redis_failed("append", e)
                    return False

    async def _store(self, group: list[tuple[Any, float]]) -> None:
        records = [r for r, _ in group]
        arrivals = {id(r.candle): arrival for r, arrival in group}
        plan = self.store.plan(records)
        self._early_pass(plan)
        results = await self.store.commit(plan)
        status = {id(r): res.status for r, res in zip(records, results, strict=True)}
        retry = [r for r in records if status[id(r)] == "gap"]
        if retry:
            # the feed already backfilled what the exchange has: the hole is real
            # (the store counted the gap when it reported it)
            for r, res in zip(retry, await self.store.append(retry, allow_gap=True), strict=True):
                status[id(r)] = res.status
        fresh = self.bars.fresh((r.candle, status[id(r)]) for r in records)
        if self.scorer is not None:  # scored after the next publish, off the critical path
            self._outcomes.extend((c.series, c.open_ms, c.close, c.volume) for c in fresh)
            if len(self._outcomes) > OUTCOMES_HELD_MAX:  # a long backfill: no publish comes
                self._score([])
        for candle in fresh:
            self._arrive(candle, arrivals[id(candle)])

    def _early_pass(self, plan: AppendPlan) -> None:
        """If the plan completes a live bar, start the bar's forward pass on the windows
        it forecasts, while Redis stores them (:mod:`inference.forward`)."""
        if self.stopping or not self.predictor.early_pass:
            return
        completes = self.bars.completes([r.candle for r in plan.records])
        if completes is None or not plan.series:
            return
        key, earlier = completes
        series, windows = plan.series, plan.windows()
        if earlier:  # stored before: their windows are the mirror's
            series = earlier + series
            windows = np.concatenate([self.store.windows(earlier)[0], windows])
        self.predictor.start_early(key, series, windows)

    def _arrive(self, candle: Candle, arrival: float) -> None:
        if not self.bars.started(candle.exchange):
            # exchange time when this exchange's first bars came in (its feed has started)
            self.bars.start(candle.exchange, self.clock_for(candle.exchange).now_ms())
        decision = self.bars.arrive(candle, arrival)
        if decision.caught_up:
            self.metrics.bars_caught_up.labels(candle.timeframe).inc()
        if decision.history:
            self.metrics.history_bars.labels(candle.timeframe).inc()
        if decision.late:
            self.metrics.late_series.labels(candle.timeframe).inc()
        if decision.flush:
            self._schedule(decision.key)
        elif decision.deadline is not None:
            delay = max(0.0, decision.deadline - time.time())
            asyncio.get_running_loop().call_later(delay, self._expire, decision.deadline)

    def _expire(self, deadline: float) -> None:
        """A grace deadline: predict the bars whose grace ran out with what came."""
        for key in self.bars.due(max(time.time(), deadline)):
            self._schedule(key)

    def _schedule(self, key: BarKey) -> None:
        if not self.bars.queue(key):
            return  # one queued flush per bar, not one per arriving series
        task = asyncio.get_running_loop().create_task(self._flush_locked(key))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_older(self, group: list[Candle]) -> None:
        """Before a series' next bar overwrites its window, predict its pending bar."""
        for key in self.bars.older_pending(group):
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
                        keys.add(self.bars.resume(candle, arrival))
                        self.metrics.bars_caught_up.labels(candle.timeframe).inc()
                for key in sorted(keys):
                    await self._flush(key)

    def prime(self, runtimes: Mapping[str, Runtime] | None = None) -> None:
        """Prime ``runtimes`` (default: the serving ones) from the windows held now, so
        the next bar steps: at start-up, and for a version parked for the next swap."""
        windows, ready = self.store.windows(self.series)
        self.predictor.prime(self.series, windows, ready, runtimes)

    # ----------------------------------------------------------------- output
    async def _flush_locked(self, key: BarKey) -> None:
        try:
            async with self._lock:
                await self._flush(key)
        except Exception as e:  # noqa: BLE001 - loop boundary: one bad bar must not stop the daemon
            log.error("bar failed", timeframe=key[0], bar_open_ms=key[1], error=repr(e))

    async def _flush(self, key: BarKey) -> None:
        take = self.bars.take(key)
        if take is None:
            return
        if take.series:
            with structlog.contextvars.bound_contextvars(timeframe=key[0], bar_open_ms=key[1]):
                await self._predict_and_publish(take)
        self.predictor.forget(self.bars.forget_old(key))

    async def _predict_and_publish(self, take: Take) -> None:
        (timeframe, open_ms), todo = take.key, take.series
        windows, ready = self.store.windows(todo)
        ready &= self.store.last_open_times(todo) == open_ms  # a window of this bar
        not_ready = len(todo) - int(ready.sum())
        if not_ready:
            self.metrics.not_ready.labels(timeframe).inc(not_ready)
        predictions = await self.predictor.predict(take, windows, ready)
        published = await self._publish(predictions.outputs)
        done = time.time()  # published: what follows is bookkeeping
        if self.scorer is not None:
            self._score(predictions.outputs)
        latency = done - max(take.arrived[s] for s in todo)
        if predictions.outputs:
            self.metrics.bar_latency.labels(timeframe).observe(latency)
            self.metrics.last_publish.labels(timeframe).set(time.time())
        self.metrics.bars_processed.labels(timeframe).inc()
        self.metrics.series_ready.labels(timeframe).set(len(predictions.series))
        log.info(
            "bar", series=len(todo), predicted=len(predictions.series), not_ready=not_ready,
            late=take.late, published=published, latency_ms=round(latency * 1000, 2),
            inference_ms={k: round(v * 1000, 2) for k, v in predictions.seconds.items()},
        )  # fmt: skip
        self.predictor.prime_after(take, windows, ready)

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
        pending, check = self.outbox.to_publish(outputs)
        if not pending:
            return 0
        try:
            if check:  # the failed attempt may have gone through with its reply lost
                pending = await self.publisher.not_yet_published(pending)
                self.outbox.narrowed(pending)
            sent = await self.publisher.publish(pending)
        except REDIS_DOWN as e:
            self._redis_failed("publish", e)
            return 0
        self.outbox.published()
        return int(sent)

    def _redis_failed(self, operation: str, error: BaseException) -> None:
        log.error(
            "redis unavailable, kept for retry", operation=operation, error=repr(error),
            candles_waiting=self.outbox.candles_waiting,
            predictions_waiting=self.outbox.predictions_waiting,
        )  # fmt: skip
        if self._retry_task is None or self._retry_task.done():
            # a fresh context: the retry belongs to no one bar's log fields
            self._retry_task = asyncio.get_running_loop().create_task(
                self._retry(), context=contextvars.Context()
            )

    async def _retry(self) -> None:
        """Until Redis takes everything kept: queued predictions first, then the backlog."""
        delays = self.outbox.retry_delays()
        while not self.outbox.empty:
            await asyncio.sleep(next(delays))
            async with self._lock:
                await self._publish([])
            if self.outbox.may_store:
                await self._store_backlog()
        log.info("redis back, everything kept has been written")

    # -------------------------------------------------------------- lifecycle
    async def drain(self, timeout_seconds: float) -> bool:
        """Stop taking bars; finish what is in flight. True if it finished in time."""
        self.stopping = True
        for key in self.bars.unfinished():
            self._schedule(key)  # predict what arrived rather than drop it
        pending: list[Awaitable[Any]] = list(self._flushes)
        if self._retry_task is not None and not self._retry_task.done():
            pending.append(self._retry_task)
        if not pending:
            await self.predictor.settle()
            return True
        _done, not_done = await asyncio.wait(pending, timeout=timeout_seconds)  # type: ignore[type-var]
        if not_done and self._retry_task is not None:
            self._retry_task.cancel()
            log.error(
                "stopping with writes redis did not take", predictions=self.outbox.predictions_waiting,
                candles=self.outbox.candles_waiting,
            )  # fmt: skip
        await self.predictor.settle()
        return not not_done
