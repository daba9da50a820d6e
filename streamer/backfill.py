"""REST backfill: closed bars over ``fetch_ohlcv``, paginated, rate-limit aware.

Pages go forward from the oldest bar wanted, each at most the exchange's full page
(Binance and Bybit 1000, OKX 100) and, for exchanges that answer the newest bars of an
open range (Bybit), bounded at its end too, so no page skips bars whatever the
exchange's own order.

The exchange's REST answer includes the still-forming bar (anything whose close
time is after the exchange clock's now): it is never returned as closed. Bars
off the timeframe grid or otherwise invalid are counted and dropped. When the
exchange never had some bars (real outages skip hours) the answer simply
lacks them; :class:`RestAnswer` carries every open time the exchange showed so the
caller can tell a hole from "not there yet".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import ccxt

from streamer.backoff import Backoff
from streamer.ccxt_ports import RestClient, Row
from streamer.clock import Clock
from streamer.exchange import (
    RATE_LIMIT_ERRORS,
    ExchangeAdapter,
    close_within,
    retry_after_seconds,
)
from streamer.sequencer import RestAnswer
from streamer.validation import CandleValidator, candle_from_row
from whalecast.domain import Candle, Series
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.settings import FeedSettings

log = get_logger(__name__)
MAX_RETRY_AFTER_SECONDS = 600.0
ERRORS_BEFORE_RECREATE = 3


class BackfillFailed(Exception):
    """REST did not answer after all retries; the caller tries again later."""


class RestSession:
    """The long-lived REST client, replaced every ``client_recreate_seconds`` or after errors."""

    def __init__(
        self,
        adapter: ExchangeAdapter,
        feed: FeedSettings,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.adapter = adapter
        self._monotonic = monotonic
        self._max_age = feed.client_recreate_seconds
        self._close_seconds = feed.stale_after_seconds  # the feed's one bound on the client
        self._client: RestClient | None = None
        self._created = 0.0
        self._errors = 0
        self._in_use: dict[int, int] = {}
        self._retired: list[RestClient] = []

    @property
    def client(self) -> RestClient:
        now = self._monotonic()
        if self._client is not None and (
            now - self._created > self._max_age or self._errors >= ERRORS_BEFORE_RECREATE
        ):
            self._retired.append(self._client)
            self._client = None
        if self._client is None:
            self._client = self.adapter.rest_client()
            self._created = now
            self._errors = 0
        return self._client

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[RestClient]:
        client = self.client
        self._in_use[id(client)] = self._in_use.get(id(client), 0) + 1
        try:
            yield client
        finally:
            self._in_use[id(client)] -= 1
            await self._close_idle_retired()

    def failed(self) -> None:
        self._errors += 1

    def succeeded(self) -> None:
        self._errors = 0

    async def _close_idle_retired(self) -> None:
        idle = [c for c in self._retired if self._in_use.get(id(c), 0) == 0]
        for client in idle:
            self._retired.remove(client)
            self._in_use.pop(id(client), None)
            await close_within(client, self._close_seconds)

    async def aclose(self) -> None:
        for client in [*self._retired, self._client]:
            if client is not None:
                await close_within(client, self._close_seconds)
        self._retired.clear()
        self._client = None


class Backfiller:
    """Fetches closed bars of one exchange's series over REST."""

    def __init__(
        self,
        session: RestSession,
        feed: FeedSettings,
        metrics: Metrics,
        *,
        validator: CandleValidator,
        clock: Clock,
        exchange: str,
        retries: int = 5,
    ) -> None:
        self._session = session
        self._feed = feed
        self._validator = validator
        self._clock = clock
        self._retries = retries
        outcomes = ("ok", "error", "rate_limited")
        self._requests = {o: metrics.backfill_requests.labels(exchange, o) for o in outcomes}

    async def fetch(self, series: Series, since_ms: int, until_ms: int) -> RestAnswer:
        """Closed bars with ``since_ms <= open_ms <= until_ms``, as far as the exchange has them."""
        bar = series.bar_ms
        found: dict[int, Candle] = {}
        seen: set[int] = set()
        cursor = since_ms
        page = self._session.adapter.rest_limit
        pages_left = (max(until_ms - since_ms, 0) // bar) // page + 2
        while cursor <= until_ms and pages_left > 0:
            pages_left -= 1
            limit = min(page, (until_ms - cursor) // bar + 2)
            rows = await self._request(series, cursor, limit)
            page_newest = self._collect(series, rows, (since_ms, until_ms), found, seen)
            if page_newest is None or page_newest < cursor or len(rows) < limit:
                break
            cursor = page_newest + bar
        return RestAnswer([found[k] for k in sorted(found)], sorted(seen))

    def _collect(
        self,
        series: Series,
        rows: list[Row],
        window: tuple[int, int],
        found: dict[int, Candle],
        seen: set[int],
    ) -> int | None:
        """Adds the page's closed, valid rows to ``found``; returns the page's newest open time."""
        since_ms, until_ms = window
        now = self._clock.now_ms()
        newest: int | None = None
        for row in rows:
            candle = candle_from_row(series, row, closed=True) if isinstance(row, list) else None
            if not self._validator.accept(candle, check_future=False):
                continue
            assert candle is not None
            newest = candle.open_ms if newest is None else max(newest, candle.open_ms)
            if candle.open_ms < since_ms:
                continue
            seen.add(candle.open_ms)
            if candle.close_ms > now or candle.open_ms > until_ms:
                continue  # still forming, or beyond what was asked for
            found.setdefault(candle.open_ms, candle)
        return newest

    async def _request(self, series: Series, since_ms: int, limit: int) -> list[Row]:
        backoff = Backoff.from_settings(self._feed)
        for attempt in range(self._retries + 1):
            async with self._session.use() as client:
                try:
                    params = self._session.adapter.page_params(since_ms, limit, series.bar_ms)
                    rows = await client.fetch_ohlcv(
                        series.symbol, series.timeframe, since=since_ms, limit=limit, params=params
                    )
                except RATE_LIMIT_ERRORS as e:
                    self._requests["rate_limited"].inc()
                    hint = retry_after_seconds(client)
                    delay = min(hint, MAX_RETRY_AFTER_SECONDS) if hint else backoff.delay()
                    error: Exception = e
                except ccxt.BaseError as e:  # every other ccxt error: retried with backoff
                    self._requests["error"].inc()
                    self._session.failed()
                    delay, error = backoff.delay(), e
                else:
                    self._requests["ok"].inc()
                    self._session.succeeded()
                    return list(rows or [])
            if attempt == self._retries:
                break
            log.info("backfill request retried", series=series.tag, error=type(error).__name__,
                     delay_seconds=round(delay, 3), attempt=attempt + 1)  # fmt: skip
            await asyncio.sleep(delay)
        raise BackfillFailed(f"{series.tag}: REST failed after {self._retries + 1} attempts")
