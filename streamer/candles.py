"""The candle feed: closed, validated bars of every configured series, exactly once, in order.

``CandleFeed.run()`` keeps websocket connections open (sharded above
``max_streams_per_connection``, subscriptions paced under the exchange's rate),
detects closed bars (the exchange's flag, else the next bar, else a deadline of
bar end + grace after which REST is asked), backfills over REST at start-up,
after every reconnect and for every gap, and calls ``on_closed`` with batches of
candles (:mod:`streamer.batches`): per series strictly in order, each bar once, the
bars of one close together when they arrive together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from streamer.backfill import Backfiller, BackfillFailed, RestSession
from streamer.backoff import Backoff
from streamer.batches import CloseBatches, OnClosed
from streamer.ccxt_ports import RestClient, Row
from streamer.clock import Clock, LiveClock, ReplayClock, measure_skew_ms
from streamer.connection import Connection, SubscribeLimiter
from streamer.exchange import ExchangeAdapter, FeedConfigError
from streamer.link import FeedFacts, LinkStatus, combined, iso
from streamer.sequencer import Sequencer
from streamer.validation import CandleValidator, candle_from_row
from whalecast.domain import Series
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.settings import ExchangeCredentials, ExchangeSettings, FeedSettings

log = get_logger(__name__)

SKEW_WARN_MS = 2_000


class CandleFeed:
    """Closed bars of one ``exchanges:`` entry, delivered to ``on_closed``."""

    def __init__(
        self,
        exchange_settings: ExchangeSettings,
        feed_settings: FeedSettings,
        metrics: Metrics,
        on_closed: OnClosed,
        resume_from: Mapping[Series, int | None] | None = None,
        *,
        clock: Clock | None = None,
        warmup_bars: int = 0,
        credentials: ExchangeCredentials | None = None,
        closed_flag: bool | None = None,
    ) -> None:
        self.settings = exchange_settings
        self.feed = feed_settings
        self.metrics = metrics
        self.series = [
            Series(exchange_settings.id, symbol, exchange_settings.timeframe)
            for symbol in exchange_settings.symbols
        ]
        self._by_pair = {(s.symbol, s.timeframe): s for s in self.series}
        self._resume_from = dict(resume_from or {})
        self._clock = clock
        self._warmup_bars = warmup_bars
        self.adapter = ExchangeAdapter(exchange_settings, feed_settings, credentials, closed_flag)
        self._session = RestSession(self.adapter, feed_settings)
        self.batches = CloseBatches(len(self.series), feed_settings, on_closed)
        self._rest_queue: asyncio.Queue[Series] = asyncio.Queue()
        self._grace_ms = int(feed_settings.grace_seconds * 1000)
        self._seq: Sequencer | None = None
        self._validator: CandleValidator | None = None
        self._owned_clock: ReplayClock | None = None
        self.connections: list[Connection] = []
        where = exchange_settings.rest_url or f"{exchange_settings.id}'s REST API"
        self._created_s = time.time()
        self._startup = LinkStatus(self._created_s, f"load markets and server time from {where}")

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            raise RuntimeError("the feed has not started")
        return self._clock

    @property
    def connected(self) -> bool:
        """Every websocket connection of this feed is up (False before start-up)."""
        return bool(self.connections) and all(c.connected for c in self.connections)

    def facts(self) -> FeedFacts:
        """Connected, or since when not, what was last tried and what failed (for /readyz)."""
        if not self.connections:
            return self._startup.facts(self.settings.id)
        return combined(self.settings.id, [c.link for c in self.connections])

    async def run(self) -> None:
        """Runs until cancelled; start-up errors other than a bad configuration are retried."""
        try:
            await self._start()
            async with asyncio.TaskGroup() as group:
                for index in range(self.feed.backfill_concurrency):
                    group.create_task(self._rest_worker(), name=f"rest-{index}")
                group.create_task(self._deadline_loop(), name="deadlines")
                group.create_task(self.batches.run(), name="batches")
                for connection in self.connections:
                    group.create_task(connection.run(), name=f"ws-{connection.index}")
        finally:
            if self._owned_clock is not None:
                await self._owned_clock.aclose()
            await self._session.aclose()

    # -- start-up --------------------------------------------------------------------
    async def _start(self) -> None:
        backoff = Backoff.from_settings(self.feed)
        while True:
            try:
                async with self._session.use() as rest:
                    await self.adapter.load_markets(rest)
                    if self._clock is None:
                        self._clock = await self._make_clock(rest)
                break
            except FeedConfigError:
                raise
            except Exception as e:  # noqa: BLE001 - start-up boundary: the exchange may come back
                delay = backoff.delay()
                self._startup.failed(repr(e), time.time())
                log.warning("exchange not reachable at start-up", exchange=self.settings.id,
                            tried=self._startup.last_tried, error=repr(e),
                            failing_since=iso(self._startup.since_s),
                            failed_attempts=self._startup.attempts,
                            retry_seconds=round(delay, 3))  # fmt: skip
                await asyncio.sleep(delay)
        self._startup.succeeded(time.time())
        clock = self.clock
        self._validator = CandleValidator(self.feed, clock, self.metrics)
        start = Sequencer.baseline(
            self.series, self._resume_from, clock.now_ms(), self._warmup_bars
        )
        self._seq = Sequencer(
            start,
            self.metrics,
            self.batches.add,
            self._rest_queue.put_nowait,
            trust_next_bar=not self.adapter.has_closed_flag,
            retry_seconds=(self.feed.backoff_initial_seconds, self.feed.backoff_max_seconds),
        )
        self._backfiller = Backfiller(
            self._session,
            self.feed,
            self.metrics,
            validator=self._validator,
            clock=clock,
            exchange=self.settings.id,
            retries=self.feed.rest_retries,
        )
        self._seq.startup(clock.now_ms())
        self._build_connections()

    async def _make_clock(self, rest: RestClient) -> Clock:
        if self.feed.clock == "replay":
            # through the session, not this client: the session replaces a failing client
            clock = ReplayClock(self._fetch_time, self.feed.replay_clock_poll_seconds)
            await clock.start()
            self._owned_clock = clock
            # the daemon runs on the exchange's own clock: there is no skew to correct
            self.metrics.clock_skew.labels(self.settings.id).set(0.0)
            return clock
        skew = await measure_skew_ms(rest.fetch_time)
        self.metrics.clock_skew.labels(self.settings.id).set(skew / 1000.0)
        if abs(skew) > SKEW_WARN_MS:
            log.warning("local clock differs from the exchange", exchange=self.settings.id,
                        skew_ms=skew)  # fmt: skip
        return LiveClock(offset_ms=skew)

    async def _fetch_time(self) -> int:
        async with self._session.use() as rest:
            return int(await rest.fetch_time())

    def _build_connections(self) -> None:
        limiter = SubscribeLimiter(self.settings.subscribe_messages_per_second)
        pairs = [(s.symbol, s.timeframe) for s in self.series]
        per = self.settings.max_streams_per_connection
        self.connections = [
            Connection(
                i,
                pairs[start : start + per],
                self.adapter,
                self.feed,
                self.metrics,
                limiter=limiter,
                on_kline=self._on_kline,
                on_malformed=self._on_malformed,
                on_connected=self._on_connected,
                down_since_s=self._created_s,  # not connected since the feed began
            )
            for i, start in enumerate(range(0, len(pairs), per))
        ]

    # -- websocket input (called synchronously from ccxt's handlers) -----------------------
    def _on_kline(
        self, symbol: str, timeframe: str, row: Row, closed: bool | None, event_ms: int | None
    ) -> None:
        assert self._validator is not None and self._seq is not None
        if event_ms is not None:
            self.clock.observe(event_ms)
        series = self._by_pair.get((symbol, timeframe))
        if series is None:
            self._validator.reject("unknown_symbol")
            return
        candle = candle_from_row(series, row, closed=closed is True)
        if not self._validator.accept(candle):
            return
        assert candle is not None
        reason = self._seq.closed(candle, "ws_flag") if closed else self._seq.forming(candle)
        if reason is not None:
            self._validator.reject(reason)

    def _on_malformed(self) -> None:
        if self._validator is not None:
            self._validator.reject("malformed")

    def _on_connected(self, connection: Connection, reconnect: bool) -> None:
        assert self._seq is not None
        if reconnect:
            series = [self._by_pair[p] for p in connection.pairs]
            self._seq.reconnected(series, self.clock.now_ms())

    # -- REST ------------------------------------------------------------------------
    async def _rest_worker(self) -> None:
        assert self._seq is not None
        while True:
            series = await self._rest_queue.get()
            since = self._seq.expected_ms(series)
            try:
                answer = await self._backfiller.fetch(series, since, self.clock.now_ms())
            except BackfillFailed as e:
                log.warning("backfill failed, will retry", series=series.tag, error=str(e))
                self._seq.rest_failed(series, time.monotonic())
                continue
            except Exception as e:  # noqa: BLE001 - per-request boundary: count as failed, retry later
                log.error("backfill error", series=series.tag, error=repr(e))
                self._seq.rest_failed(series, time.monotonic())
                continue
            self._seq.rest_answer(series, answer, time.monotonic())

    async def _deadline_loop(self) -> None:
        assert self._seq is not None
        while True:
            await asyncio.sleep(self.feed.deadline_check_seconds)
            try:
                self._seq.request_due(self.clock.now_ms(), self._grace_ms, time.monotonic())
            except Exception as e:  # noqa: BLE001 - loop boundary: the next check comes soon
                log.error("deadline check failed", exchange=self.settings.id, error=repr(e))
