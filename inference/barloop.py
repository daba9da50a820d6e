"""The bar loop: the daemon's heartbeat, the async driver of the bar path.

Closed candles come in from the feeds (:meth:`BarLoop.on_closed`). One bar at a
time, oldest first, the loop plans the store append, starts the early pass on
the plan's forecast windows if they complete a live bar, and commits the plan.
When a bar is ready is :mod:`inference.completion`'s to say; what Redis could
not take waits in :mod:`inference.outbox` (retried in order, never lost, never
written twice); the models are the :mod:`inference.predictor`'s. A ready batch
is predicted from complete windows of its bar only, published in one pipeline,
then scored and primed off the critical path. ``docs/architecture.md`` draws it.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import structlog
from redis.exceptions import RedisError

from inference.completion import BarCompletion, BarKey, Take
from inference.forward import Runtime
from inference.outbox import Outbox
from inference.ports import Clock, Publisher, Scorer, Store
from inference.predictor import Predictor
from inference.publisher import PredictionOut
from streamer.store_format import BarRecord
from streamer.store_plan import AppendPlan
from whalecast.domain import Candle, Series, WhaleBar
from whalecast.logs import get_logger
from whalecast.metrics import Metrics

log = get_logger(__name__)

#: Failures after which the loop keeps what it could not write and retries it.
REDIS_DOWN = (RedisError, OSError)


class BarLoop:
    """Turns closed bars into stored windows and published predictions."""

    def __init__(
        self,
        *,
        series: Sequence[Series],
        store: Store,
        predictor: Predictor,
        publisher: Publisher,
        metrics: Metrics,
        clock_for: Callable[[str], Clock],
        grace_seconds: float,
        whale_for: Callable[[Series, int], WhaleBar],
        scorer: Scorer | None = None,
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
        self.bars = BarCompletion(
            self.series, store, grace_seconds=grace_seconds, predicted_through=predicted_through,
            stored_upto={s: store.last_open_ms(s) for s in self.series},
        )  # fmt: skip
        self.busy = asyncio.Lock()  # held while a bar is stored, or predicted and published
        self._flushes: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.outbox: Outbox[BarRecord] = Outbox(retry_initial_seconds)
        self._retry_task: asyncio.Task[None] | None = None

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
            [BarRecord(c, self.whale_for(c.series, c.open_ms)) for c in candles], arrival
        )
        await self._store_backlog()

    async def _store_backlog(self) -> bool:
        """Store (and predict) the backlog one bar at a time, oldest first; False if Redis failed."""
        while True:
            async with self.busy:
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

    async def _store(self, group: list[tuple[BarRecord, float]]) -> None:
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
        fresh = self.bars.fresh([(r.candle, status[id(r)]) for r in records])
        if self.scorer is not None:  # scored after the next publish, off the critical path
            self.scorer.stored(fresh)
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
            async with self.busy:
                bar = [c for c in candles if c.open_ms == open_ms]
                for candle in bar:
                    self.metrics.bars_caught_up.labels(candle.timeframe).inc()
                for key in sorted({self.bars.resume(c, arrival) for c in bar}):
                    await self._flush(key)

    def prime(self, runtimes: Mapping[str, Runtime] | None = None) -> None:
        """Prime ``runtimes`` (default: the serving ones) from the windows held now, so
        the next bar steps: at start-up, and for a version parked for the next swap."""
        windows, ready = self.store.windows(self.series)
        self.predictor.prime(self.series, windows, ready, runtimes)

    # ----------------------------------------------------------------- output
    async def _flush_locked(self, key: BarKey) -> None:
        try:
            async with self.busy:
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
            self.scorer.published(predictions.outputs)
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
            async with self.busy:
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
        pending = set(self._flushes)
        if self._retry_task is not None and not self._retry_task.done():
            pending.add(self._retry_task)
        not_done: set[asyncio.Task[None]] = set()
        if pending:
            _done, not_done = await asyncio.wait(pending, timeout=timeout_seconds)
        if not_done and self._retry_task is not None:
            self._retry_task.cancel()
            log.error(
                "stopping with writes redis did not take", predictions=self.outbox.predictions_waiting,
                candles=self.outbox.candles_waiting,
            )  # fmt: skip
        await self.predictor.settle()
        return not not_done
