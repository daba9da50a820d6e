"""``whalecast run``: the daemon, assembled from its parts.

Start-up order: Redis (embedded or configured), this replica's series (its
shard), the window store's state and the handover marks from Redis, the served
models, the HTTP endpoints, the stored bars a previous owner did not publish
(predicted at once, :mod:`inference.handover`), then the feeds. The feeds
resume each series from the last bar stored in Redis and backfill over REST,
so the first prediction comes at the first bar close, and bars that closed
while no replica owned a series are predicted as they come back. SIGTERM/SIGINT: stop taking bars, finish the bar in flight
within ``inference.shutdown_grace_seconds``, close connections, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.exceptions import RedisError

from inference.barloop import BarLoop
from inference.handover import PredictionMarks, pending
from inference.http import HttpServer
from inference.looplag import LoopLagMonitor
from inference.models import ModelSet
from inference.predictor import Predictor
from inference.publisher import Publisher
from inference.scoring import LiveScorer
from inference.status import StatusPublisher
from streamer.candles import CandleFeed
from streamer.clock import Clock
from streamer.features import HISTORY_BARS
from streamer.store import BarRecord, WindowStore
from streamer.whale import WhaleFeed
from streamer.whale_bars import WhaleBarAggregator
from streamer.whale_intake import WhaleIntake
from streamer.whale_record import AlertRecorder
from whalecast.domain import Series
from whalecast.keys import Keys
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.redisconn import RedisHandle, RedisUnavailable, describe_redis_error
from whalecast.settings import ExchangeSettings, Settings
from whalecast.sharding import owned

log = get_logger(__name__)


def all_series(settings: Settings) -> list[Series]:
    return [Series(e.id, symbol, e.timeframe) for e in settings.exchanges for symbol in e.symbols]


def owned_exchanges(settings: Settings, mine: list[Series]) -> list[ExchangeSettings]:
    """The configured exchange entries cut down to this replica's symbols."""
    out = []
    for entry in settings.exchanges:
        symbols = [
            s.symbol for s in mine if s.exchange == entry.id and s.timeframe == entry.timeframe
        ]
        if symbols:
            out.append(entry.model_copy(update={"symbols": symbols}))
    return out


class _FeedClock:
    """The clock of a candle feed, once that feed has started (replay follows the simulator)."""

    def __init__(self, feed: CandleFeed) -> None:
        self.feed = feed

    def now_ms(self) -> int:
        return self.feed.clock.now_ms()

    def slack_ms(self) -> int:
        return self.feed.clock.slack_ms()


class Daemon:
    """The running service; ``await start()``, then ``await stop()``."""

    def __init__(self, settings: Settings, metrics: Metrics, redis: Any) -> None:
        self.settings = settings
        self.metrics = metrics
        self.redis = redis
        self.keys = Keys(settings.redis.prefix)
        shard = settings.shard
        if shard.index_from_hostname:
            raise ValueError("resolve shard.index_from_hostname first (with_shard_from_hostname)")
        self.series = owned(all_series(settings), shard.index, shard.count)
        metrics.series_owned.set(len(self.series))
        timeframes = sorted({s.timeframe for s in self.series})
        metrics.initialise(timeframes, settings.inference.models, started_s=time.time())
        self.store = WindowStore(
            redis, self.keys, self.series, settings.features.window, metrics,
            ttl_seconds=settings.features.store_ttl_seconds,
        )  # fmt: skip
        self.models = ModelSet(
            settings.inference, metrics, redis=redis, keys=self.keys,
            full_window=settings.features.window,
        )  # fmt: skip
        inference = settings.inference
        self.predictor = Predictor(
            self.models, self.series, metrics, early_pass=inference.early_pass,
            priming=inference.priming, freeze=inference.freeze_heap,
        )  # fmt: skip
        self.marks = PredictionMarks(redis, self.keys, settings.features.store_ttl_seconds)
        self.publisher = Publisher(
            redis, self.keys, settings.redis.stream_maxlen, metrics, marks=self.marks
        )
        self.scorer = LiveScorer(settings.inference.scoring_window, metrics)
        self.whale = WhaleIntake(
            WhaleBarAggregator(self.series, settings.whale.stablecoins), metrics
        )
        self.feeds: list[CandleFeed] = []
        self.bar_loop: BarLoop | None = None
        self.http: HttpServer | None = None
        self.status = StatusPublisher(self, settings.metrics.status_seconds)
        self._tasks: list[asyncio.Task[None]] = []

    def clock_for(self, exchange: str) -> Clock:
        for feed in self.feeds:
            if feed.settings.id == exchange:
                return feed.clock
        raise KeyError(exchange)

    def readiness(self) -> Mapping[str, bool]:
        """What /readyz reports: feeds connected, windows warm, models loaded."""
        warm = False
        if self.series:
            _windows, ready = self.store.windows(self.series)
            warm = bool(ready.any())
        return {
            "feeds": bool(self.feeds) and all(feed.connected for feed in self.feeds),
            "windows": warm,
            "models": self.models.ready,
        }

    async def start(self) -> None:
        s = self.settings
        await self.store.load()
        recorder = None
        if s.whale.enabled and s.whale.record_path is not None:
            recorder = AlertRecorder(s.whale.record_path)  # a bad path stops start-up, named
            stored = {ser: self.store.last_open_ms(ser) for ser in self.series}
            self.whale.restore_recording(recorder.path, stored)
        marks = await self.marks.load(self.series)
        await self.predictor.load()
        self.http = await HttpServer(
            self.metrics, self.readiness, s.metrics.host, s.metrics.port
        ).start()
        self.bar_loop = BarLoop(
            series=self.series, store=self.store, predictor=self.predictor, publisher=self.publisher,
            metrics=self.metrics, clock_for=self.clock_for, grace_seconds=s.feed.grace_seconds,
            whale_for=self.whale.take, scorer=self.scorer, record_factory=BarRecord,
            predicted_through=marks,
            retry_initial_seconds=s.feed.backoff_initial_seconds,
        )  # fmt: skip
        await self.bar_loop.resume(pending(self.store, marks, self.metrics))
        bar_loop = self.bar_loop
        bar_loop.prime()  # from the stored windows: the next bar steps if it follows them
        self.models.on_parked = lambda runtime: bar_loop.prime({runtime.model: runtime})
        warmup = HISTORY_BARS + s.features.window
        for entry in owned_exchanges(s, self.series):
            resume = {
                ser: self.store.last_open_ms(ser) for ser in self.series if ser.exchange == entry.id
            }
            self.feeds.append(
                CandleFeed(
                    entry,
                    s.feed,
                    self.metrics,
                    self.bar_loop.on_closed,
                    resume,
                    warmup_bars=warmup,
                    credentials=s.credentials.get(entry.id),
                )
            )
        self._spawn("models", self.models.watch())
        self._spawn("loop-lag", LoopLagMonitor(self.metrics).run())
        self._spawn("status", self.status.run())
        for feed in self.feeds:
            self._spawn(f"feed-{feed.settings.id}", feed.run())
        if s.whale.enabled and self.feeds:
            whale = WhaleFeed(
                s.whale, s.feed, self.metrics, self.whale.add, clock=_FeedClock(self.feeds[0]),
                stamp=self.whale.stamp, record=recorder.write if recorder else None,
            )  # fmt: skip
            self._spawn("whale", whale.run())
        log.info(
            "daemon started", series=len(self.series), shard=f"{s.shard.index}/{s.shard.count}",
            models=sorted(self.models.serving()), metrics_port=self.http.port,
        )  # fmt: skip

    def _spawn(self, name: str, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(self._task_ended)
        self._tasks.append(task)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("task ended with an error", task=task.get_name(), error=repr(error))

    async def stop(self) -> bool:
        """Graceful drain. Returns False if the bar in flight did not finish within the grace."""
        grace = self.settings.inference.shutdown_grace_seconds
        drained = True
        if self.bar_loop is not None:
            drained = await self.bar_loop.drain(grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.status.remove()
        if self.http is not None:
            await self.http.stop()
        gc.unfreeze()  # what start() froze can be collected again (e.g. in a longer process)
        log.info("daemon stopped", drained=drained)
        return drained


async def serve(
    settings: Settings,
    metrics: Metrics,
    stop: asyncio.Event,
    on_started: Callable[[Daemon], Awaitable[None]] | None = None,
) -> int:
    """Run until ``stop`` is set; the exit status."""
    async with RedisHandle(settings.redis) as redis:
        daemon = Daemon(settings, metrics, redis)
        try:
            await daemon.start()
        except RedisError as e:  # e.g. an ACL without a command the daemon needs
            await daemon.stop()
            raise RedisUnavailable(
                describe_redis_error(e, settings.redis, settings.redis.url)
            ) from e
        if on_started is not None:
            await on_started(daemon)
        await stop.wait()
        log.info("stop requested, finishing the bar in flight")
        await daemon.stop()
    return 0


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_forever(settings: Settings, metrics: Metrics) -> int:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    return await serve(settings, metrics, stop)
