"""One websocket connection (a shard of an exchange's series), kept alive forever.

Each connection owns a fresh ccxt client per session, so a reconnect also
drops every cache ccxt built. A session ends on a transport error, on the
staleness watchdog (no message for ``stale_after_seconds``), or proactively at
``connection_lifetime_seconds`` / ``client_recreate_seconds``; the next one
starts after a capped, jittered backoff (none for the proactive causes) and
tells the feed, which backfills whatever closed in between. The loop around the
sessions is the one both feeds run (:mod:`streamer.reconnect`); this class is
its candle side.

Nothing here waits on the ccxt client without a bound, because ccxt's futures can
stay pending for good (after a refused handshake the client's connect future is never
settled; a handshake nobody answers, a close handshake nobody answers). The watches
run as tasks the session loop polls every tick, so the watchdog ends a session whose
client went quiet, whatever it awaits; the teardown then waits at most
``stale_after_seconds`` for the cancelled watches and again for the client's close,
and leaves behind what takes longer. A watch that ccxt itself cancelled ends the
session as an error, like any transport failure, never the connection's loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import structlog

from streamer.backoff import Backoff
from streamer.ccxt_ports import Row, WsClient
from streamer.exchange import ExchangeAdapter, close_within, consume_outcome
from streamer.link import LinkStatus
from streamer.reconnect import FeedLabels, ReconnectLoop, SessionLost, session_over
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.settings import FeedSettings

log = get_logger(__name__)

SCAN_ROWS = 5
KlineHandler = Callable[[str, str, Row, "bool | None", "int | None"], None]


class ConnectionLost(SessionLost):
    """The exchange closed the socket or it failed."""


class SubscribeLimiter:
    """Spaces subscription messages at most ``rate`` per second (shared by an exchange)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = max(now, self._next) + self._interval


class Connection:
    """Keeps one subscription (``pairs``) alive; a :class:`~streamer.ccxt_ports.KlineSink`,
    and the candle side of a :class:`~streamer.reconnect.FeedSession`."""

    def __init__(
        self,
        index: int,
        pairs: Sequence[tuple[str, str]],
        adapter: ExchangeAdapter,
        feed: FeedSettings,
        metrics: Metrics,
        *,
        limiter: SubscribeLimiter,
        on_kline: KlineHandler,
        on_malformed: Callable[[], None],
        on_connected: Callable[[Connection, bool], None],
        down_since_s: float | None = None,
    ) -> None:
        self.index = index
        self.pairs = list(pairs)
        self._adapter = adapter
        self._feed = feed
        self._limiter = limiter
        self._on_kline = on_kline
        self._on_malformed_cb = on_malformed
        self._on_connected_cb = on_connected
        exchange = adapter.settings.id
        self._messages = metrics.feed_messages.labels(exchange, "candles")
        self._last_message_gauge = metrics.feed_last_message.labels(exchange, "candles")
        self._exchange = exchange
        self._tick = min(0.25, feed.stale_after_seconds / 4)
        self._bound = feed.stale_after_seconds  # the longest wait on the client, anywhere
        self._lost = asyncio.Event()
        self._lost_error: BaseException | None = None
        self._unsent_messages = 0
        self._last_message = time.monotonic()
        self._fed: dict[tuple[str, str], int] = {}
        where = adapter.settings.ws_url or f"{adapter.settings.id}'s websocket"
        self.link = LinkStatus(
            time.time() if down_since_s is None else down_since_s,
            f"subscribe {len(self.pairs)} candle stream(s) on {where}",
        )
        labels = FeedLabels(exchange, "candles", "candle feed reconnecting")
        self._loop = ReconnectLoop(labels, self.link, Backoff.from_settings(feed), metrics)

    # -- KlineSink (called from inside ccxt's message handling) -------------------
    def on_message(self) -> None:
        self._unsent_messages += 1
        self._last_message = time.monotonic()

    def on_kline(
        self, symbol: str, timeframe: str, row: Row, closed: bool | None, event_ms: int | None
    ) -> None:
        self._on_kline(symbol, timeframe, row, closed, event_ms)

    def on_malformed(self) -> None:
        self._on_malformed_cb()

    @property
    def connected(self) -> bool:
        return self._loop.connected

    def on_connected(self) -> None:
        if not self._loop.connected:
            self._loop.up()
            self._last_message = time.monotonic()
            self._on_connected_cb(self, self._loop.sessions > 1)

    def on_lost(self, error: BaseException | None) -> None:
        self._lost_error = error
        self._lost.set()

    # -- the feed's part of the reconnect loop ------------------------------------
    async def run(self) -> NoReturn:
        """Runs sessions forever (until cancelled)."""
        with structlog.contextvars.bound_contextvars(
            exchange=self._exchange, connection=self.index, streams=len(self.pairs)
        ):
            await self._loop.run(self)

    async def before_session(self) -> None:
        await self._limiter.acquire()

    def redact(self, text: str) -> str:
        return text  # nothing secret in a public candle stream's errors

    async def session(self) -> str:
        """One session on a fresh client; the watchdog's cause, or raises its error."""
        self._lost = asyncio.Event()
        self._lost_error = None
        self._last_message = time.monotonic()
        self._fed = {}
        client = self._adapter.ws_client(self)
        try:
            return await self._session(client)
        finally:
            self.flush_counters()
            client.whalecast_sink = None
            self._loop.down()
            await close_within(client, self._bound)

    async def _session(self, client: WsClient) -> str:
        started = time.monotonic()
        generic = not self._adapter.has_closed_flag
        watches: dict[tuple[tuple[str, str], ...], asyncio.Future[Any]] = {}
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await self._subscribe(client, watches, renew=generic)
            while True:
                await asyncio.wait({lost, *watches.values()}, timeout=self._tick,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                self._check(client, watches, renew=generic)
                if generic:
                    self._scan_cache(client)
                self.flush_counters()
                cause = session_over(self._feed, time.monotonic(), started, self._last_message)
                if cause is not None:
                    return cause
        finally:
            await self._cancel([*watches.values(), lost])

    async def _cancel(self, tasks: list[asyncio.Future[Any]]) -> None:
        """Cancels the session's tasks and waits for them at most the bound."""
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            _done, stuck = await asyncio.wait(pending, timeout=self._bound)
            if stuck:
                log.warning("exchange client calls did not end when cancelled, left behind",
                            calls=len(stuck), seconds=self._bound)  # fmt: skip
        for task in tasks:  # errors of a session that is over: retrieved, not raised
            if task.done():
                consume_outcome(task)
            else:
                task.add_done_callback(consume_outcome)

    async def _subscribe(
        self,
        client: WsClient,
        watches: dict[tuple[tuple[str, str], ...], asyncio.Future[Any]],
        renew: bool,
    ) -> None:
        """One watch (one subscription message) per batch of pairs the exchange allows in
        one message (all of them, or one each without watchOHLCVForSymbols), paced."""
        size = self._adapter.subscribe_batch or len(self.pairs)
        groups = [tuple(self.pairs[i : i + size]) for i in range(0, len(self.pairs), size)]
        for number, group in enumerate(groups):
            if number:
                await self._limiter.acquire()
                self._check(client, watches, renew=renew)
            watches[group] = asyncio.ensure_future(self._adapter.watch(client, group))

    def _check(
        self,
        client: WsClient,
        watches: dict[tuple[tuple[str, str], ...], asyncio.Future[Any]],
        renew: bool,
    ) -> None:
        """Raises the connection's error, if any; renews watches that returned (no closed
        flag: their returns drive next-bar detection) or drops them (the flag's hooks do)."""
        for group, task in list(watches.items()):
            if task.done():
                if task.cancelled():  # by ccxt (it cancels a closing client's futures)
                    raise ConnectionLost("the exchange client cancelled a watch")
                task.result()  # raises the transport error, if any
                if renew:
                    self._scan_cache(client)
                    watches[group] = asyncio.ensure_future(self._adapter.watch(client, group))
                else:
                    del watches[group]
        if self._lost.is_set():
            raise ConnectionLost(repr(self._lost_error) if self._lost_error else "closed")

    def _scan_cache(self, client: WsClient) -> None:
        """Exchanges without a closed flag: feed new cached rows, oldest first, so the next
        bar's appearance closes the previous one with its final values."""
        for pair in self.pairs:
            newest_fed = self._fed.get(pair, -1)
            for row in ExchangeAdapter.cached_rows(client, *pair, SCAN_ROWS):
                if isinstance(row[0], int) and row[0] >= newest_fed:
                    self._fed[pair] = newest_fed = row[0]
                    self._on_kline(pair[0], pair[1], list(row), None, None)

    def flush_counters(self) -> None:
        if self._unsent_messages:
            self._messages.inc(self._unsent_messages)
            self._unsent_messages = 0
            self._last_message_gauge.set(time.time() - (time.monotonic() - self._last_message))
