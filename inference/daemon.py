"""``whalecast run``: the daemon, assembled from its parts.

Start-up order: Redis (embedded or configured), this replica's series (its
shard), the window store's state and the handover marks from Redis, the served
models, the HTTP endpoints, the stored bars a previous owner did not publish
(predicted at once, :mod:`inference.handover`), then the feeds. The feeds
resume each series from the last bar stored in Redis and backfill over REST,
so the first prediction comes at the first bar close, and bars that closed
while no replica owned a series are predicted as they come back. SIGTERM/SIGINT: stop taking bars, finish the bar in flight
within ``inference.shutdown_grace_seconds``, close connections, exit 0
(:mod:`inference.lifecycle` runs it).
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any

from inference.barloop import BarLoop
from inference.handover import PredictionMarks, pending
from inference.http import HttpServer
from inference.looplag import LoopLagMonitor
from inference.model_watch import ModelWatcher
from inference.models import ModelSet
from inference.predictor import Predictor
from inference.publisher import Publisher
from inference.readiness import ModelFacts, ReadinessTracker, Report
from inference.scoring import LiveScorer
from inference.status import StatusPublisher
from inference.tasks import Tasks
from streamer.candles import CandleFeed
from streamer.clock import Clock
from streamer.features import HISTORY_BARS
from streamer.link import FeedFacts
from streamer.store import WindowStore
from streamer.whale import WhaleFeed
from streamer.whale_bars import WhaleBarAggregator
from streamer.whale_intake import WhaleIntake
from streamer.whale_record import AlertRecorder
from whalecast.domain import Series, floor_to_bar
from whalecast.keys import Keys
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.redisconn import public_url
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


def redis_target(settings: Settings) -> str:
    """Where Redis is, without secrets."""
    r = settings.redis
    if r.url == "embedded":
        return f"embedded ({r.state_dir})"
    return public_url(r.url) + (" (cluster)" if r.cluster else "")


def startup_summary(daemon: Daemon, metrics_port: int) -> dict[str, Any]:
    """The fields of the one start-up line operators read first."""
    s = daemon.settings
    missing = [m for m in s.inference.models if m not in daemon.model_versions()]
    return {
        "exchanges": sorted({ser.exchange for ser in daemon.series}),
        "series": len(daemon.series),
        "shard": f"{s.shard.index}/{s.shard.count}",
        "models": daemon.model_versions(),
        "models_missing": missing,
        "backend": s.inference.backend,
        # which model runtimes this process has loaded: no tensorflow with the onnx backend
        "frameworks": [m for m in ("tensorflow", "keras", "onnxruntime") if m in sys.modules],
        "redis": redis_target(s),
        "metrics_port": metrics_port,
        "startup_seconds": round(time.monotonic() - daemon.started, 2),
    }


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

    def __init__(
        self, settings: Settings, metrics: Metrics, redis: Any, started: float | None = None
    ) -> None:
        """``started``: ``time.monotonic()`` when start-up began (default: now)."""
        self.started = time.monotonic() if started is None else started
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
        self.tasks = Tasks()
        self._readiness = ReadinessTracker(self.series, time.time())
        self._feeds_built = False
        self.whale_feed: WhaleFeed | None = None
        self._starting = FeedFacts("start-up", False, time.time(), last_tried="load the "
                                   "windows and the models")  # fmt: skip

    def clock_for(self, exchange: str) -> Clock:
        for feed in self.feeds:
            if feed.settings.id == exchange:
                return feed.clock
        raise KeyError(exchange)

    def readiness(self) -> Report:
        """What /readyz reports (:mod:`inference.readiness`): feeds, windows, models."""
        complete, caught_up = self._window_facts()
        models = ModelFacts(
            tuple(self.settings.inference.models), self.model_versions(),
            registry=self.models.describe_registry(),
        )  # fmt: skip
        feeds = [feed.facts() for feed in self.feeds] if self._feeds_built else [self._starting]
        if self.whale_feed is not None:
            feeds.append(self.whale_feed.facts())
        return self._readiness.evaluate(time.time(), complete, caught_up, models, feeds)

    def model_versions(self) -> dict[str, str]:
        runtimes = ((m, self.models.runtime(m)) for m in self.settings.inference.models)
        return {model: runtime.version for model, runtime in runtimes if runtime is not None}

    def _window_facts(self) -> tuple[list[bool], list[bool]]:
        """Per owned series: window complete; bars in up to the newest closed one."""
        if not self.series:
            return [], []
        _rows, ready = self.store.windows(self.series)
        last = self.store.last_open_times(self.series)
        caught_up = [self._caught_up(s, int(ms)) for s, ms in zip(self.series, last, strict=True)]
        return [bool(r) for r in ready], caught_up

    def _caught_up(self, series: Series, last_open_ms: int) -> bool:
        try:
            now_ms = self.clock_for(series.exchange).now_ms()
        except (KeyError, RuntimeError):  # its feed has not started: nothing is known yet
            return False
        return last_open_ms >= floor_to_bar(now_ms, series.bar_ms) - series.bar_ms

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
        bar_loop = self.bar_loop = self._bar_loop(marks)
        await bar_loop.resume(pending(self.store, marks, self.metrics))
        bar_loop.prime()  # from the stored windows: the next bar steps if it follows them
        self.feeds.extend(self._candle_feeds(bar_loop))
        self._feeds_built = True
        self.tasks.spawn("models", ModelWatcher(self.models).run())
        self.tasks.spawn("prime-parked", self._prime_parked(bar_loop))
        self.tasks.spawn("loop-lag", LoopLagMonitor(self.metrics).run())
        self.tasks.spawn("status", self.status.run())
        for feed in self.feeds:
            self.tasks.spawn(f"feed-{feed.settings.id}", feed.run())
        if s.whale.enabled and self.feeds:
            self.whale_feed = self._whale_feed(recorder)
            self.tasks.spawn("whale", self.whale_feed.run())
        log.info("daemon started", **startup_summary(self, self.http.port))

    def _bar_loop(self, marks: dict[Series, int]) -> BarLoop:
        s = self.settings
        return BarLoop(
            series=self.series, store=self.store, predictor=self.predictor, publisher=self.publisher,
            metrics=self.metrics, clock_for=self.clock_for, grace_seconds=s.feed.grace_seconds,
            whale_for=self.whale.take, scorer=self.scorer,
            predicted_through=marks,
            retry_initial_seconds=s.feed.backoff_initial_seconds,
        )  # fmt: skip

    def _candle_feeds(self, bar_loop: BarLoop) -> list[CandleFeed]:
        """One feed per configured exchange with symbols of this replica, resuming each
        series from its last stored bar."""
        s = self.settings
        feeds = []
        for entry in owned_exchanges(s, self.series):
            resume = {
                ser: self.store.last_open_ms(ser) for ser in self.series if ser.exchange == entry.id
            }
            feed = CandleFeed(
                entry, s.feed, self.metrics, bar_loop.on_closed, resume,
                warmup_bars=HISTORY_BARS + s.features.window,
                credentials=s.credentials.get(entry.id),
            )  # fmt: skip
            feeds.append(feed)
        return feeds

    def _whale_feed(self, recorder: AlertRecorder | None) -> WhaleFeed:
        s = self.settings
        return WhaleFeed(
            s.whale, s.feed, self.metrics, self.whale.add, clock=_FeedClock(self.feeds[0]),
            stamp=self.whale.stamp, record=recorder.write if recorder else None,
        )  # fmt: skip

    async def _prime_parked(self, bar_loop: BarLoop) -> None:
        """Prime each version parked for the next swap, so its first bar steps too."""
        while True:
            bar_loop.prime(await self.models.parked())

    async def stop(self) -> bool:
        """Graceful drain. Returns False if the bar in flight did not finish within the grace."""
        grace = self.settings.inference.shutdown_grace_seconds
        drained = True
        if self.bar_loop is not None:
            drained = await self.bar_loop.drain(grace)
        await self.tasks.cancel(grace)
        await self.status.remove()
        if self.http is not None:
            await self.http.stop()
        gc.unfreeze()  # what start() froze can be collected again (e.g. in a longer process)
        log.info("daemon stopped", drained=drained)
        return drained
