"""The ccxt adapter: the one place that knows exchange specifics.

It builds ccxt.pro clients for one configured exchange (URL overrides, rate
limit, bounded OHLCV cache), shares the market list between them, and turns
websocket traffic into calls on a :class:`KlineSink` with plain rows
``[open_ms, open, high, low, close, volume]`` and a closed flag. Past this
module the feed sees only our symbols and those rows.

Binance (``k.x``), Bybit (``data[].confirm``) and OKX (the candle array's last
element) send a closed flag that ccxt's unified output drops; the mixins of
:mod:`streamer.closed_flags` capture it. For other exchanges ``closed`` is None and the
feed detects closes by the next bar's appearance. What else differs between exchanges
(URLs, REST page size and direction, subscription batches) is in :mod:`streamer.venues`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, cast

import ccxt
import ccxt.pro

from streamer.ccxt_ports import KlineSink, RestClient, Row, WsClient
from streamer.venues import venue_for
from whalecast.logs import get_logger
from whalecast.settings import ExchangeCredentials, ExchangeSettings, FeedSettings

log = get_logger(__name__)

RATE_LIMIT_ERRORS = (ccxt.RateLimitExceeded, ccxt.DDoSProtection)


class FeedConfigError(Exception):
    """The configured exchange or its symbols cannot be served."""


class _Hooks:
    """Mixed into any ccxt.pro exchange: counts traffic, shields the loop, reports loss."""

    whalecast_sink: KlineSink | None = None

    def handle_message(self, client: Any, message: Any) -> Any:
        sink = self.whalecast_sink
        if sink is not None:
            sink.on_message()
        try:
            return super().handle_message(client, message)  # type: ignore[misc]
        except Exception as e:  # noqa: BLE001 - message boundary: a bad frame must not stop ccxt's receive loop
            log.warning("exchange message not handled", error=repr(e)[:300])
            if sink is not None:
                sink.on_malformed()
            return None

    def client(self, url: str) -> Any:
        """ccxt's connection object, with JSON decoding shielded like message handling."""
        client = super().client(url)  # type: ignore[misc]
        if not getattr(client, "whalecast_shielded", False):
            decode = client.handle_text_or_binary_message

            def shielded(data: Any) -> None:
                try:
                    decode(data)
                except Exception:  # noqa: BLE001 - message boundary (undecodable frame)
                    if self.whalecast_sink is not None:
                        self.whalecast_sink.on_malformed()

            client.handle_text_or_binary_message = shielded
            client.whalecast_shielded = True
        return client

    def on_connected(self, client: Any, message: Any = None) -> None:
        super().on_connected(client, message)  # type: ignore[misc]
        if self.whalecast_sink is not None:
            self.whalecast_sink.on_connected()

    def on_error(self, client: Any, error: Any) -> None:
        super().on_error(client, error)  # type: ignore[misc]
        if self.whalecast_sink is not None:
            self.whalecast_sink.on_lost(error if isinstance(error, BaseException) else None)

    def on_close(self, client: Any, error: Any) -> None:
        super().on_close(client, error)  # type: ignore[misc]
        if self.whalecast_sink is not None:
            self.whalecast_sink.on_lost(error if isinstance(error, BaseException) else None)


def _base_class(exchange_id: str) -> type:
    base = getattr(ccxt.pro, exchange_id, None)
    if not isinstance(base, type):
        raise FeedConfigError(f"exchange {exchange_id!r} has no ccxt websocket (ccxt.pro) client")
    has = base().has
    if not (has.get("watchOHLCVForSymbols") or has.get("watchOHLCV")):
        raise FeedConfigError(f"exchange {exchange_id!r} has no websocket OHLCV in ccxt")
    return base


class ExchangeAdapter:
    """Builds and configures ccxt clients for one ``exchanges:`` entry."""

    def __init__(
        self,
        settings: ExchangeSettings,
        feed: FeedSettings,
        credentials: ExchangeCredentials | None = None,
        closed_flag: bool | None = None,
    ) -> None:
        self.settings = settings
        self.feed = feed
        self.credentials = credentials
        self._base = _base_class(settings.id)
        self.venue = venue = venue_for(self._base)
        if venue.timeframes is not None and settings.timeframe not in venue.timeframes:
            raise FeedConfigError(f"{settings.id}: timeframe {settings.timeframe!r} is not "
                                  f"supported, use one of {', '.join(sorted(venue.timeframes))}")  # fmt: skip
        flag = venue.closed_flag
        self.has_closed_flag = flag is not None if closed_flag is None else closed_flag
        mixins: tuple[type, ...] = (_Hooks,)
        if self.has_closed_flag:
            if flag is None:
                raise FeedConfigError(f"no closed-flag capture for {settings.id!r}")
            mixins = (flag, _Hooks)
        self.rest_limit = venue.rest_limit
        self._ws_class = type(f"Whalecast{self._base.__name__}", (*mixins, self._base), {})
        self.markets: dict[str, Any] | None = None
        self.currencies: dict[str, Any] | None = None
        self.prefer_for_symbols = True  # False: one subscription message per symbol
        self.for_symbols = False

    def _config(self) -> dict[str, Any]:
        options: dict[str, Any] = {**self.venue.options, "OHLCVLimit": self.feed.ohlcv_cache_limit}
        config: dict[str, Any] = {
            "enableRateLimit": self.settings.enable_rate_limit,
            "newUpdates": True,
            "options": options,
        }
        if self.credentials is not None:
            if self.credentials.api_key is not None:
                config["apiKey"] = self.credentials.api_key.get_secret_value()
            if self.credentials.secret is not None:
                config["secret"] = self.credentials.secret.get_secret_value()
        return config

    def _apply_urls(self, client: RestClient | WsClient) -> None:
        rest, ws = self.settings.rest_url, self.settings.ws_url
        self.venue.set_urls(client.urls.setdefault("api", {}), rest and rest.rstrip("/"),
                            ws and ws.rstrip("/"))  # fmt: skip

    def rest_client(self) -> RestClient:
        """A client for REST calls (markets, server time, OHLCV backfill)."""
        client = cast(RestClient, self._base(self._config()))
        self._apply_urls(client)
        if self.markets is not None:
            client.set_markets(self.markets, self.currencies)
        return client

    def ws_client(self, sink: KlineSink) -> WsClient:
        """A fresh websocket client (one connection's worth) reporting to ``sink``."""
        if self.markets is None:
            raise RuntimeError("load_markets() first")
        client = cast(WsClient, self._ws_class(self._config()))
        self._apply_urls(client)
        client.set_markets(self.markets, self.currencies)
        client.whalecast_sink = sink
        return client

    async def load_markets(self, rest: RestClient) -> None:
        """Loads markets once and checks every configured symbol is listed."""
        markets = await rest.load_markets()
        missing = [s for s in self.settings.symbols if s not in markets]
        if missing:
            raise FeedConfigError(
                f"{self.settings.id}: symbols not listed on the exchange: {', '.join(missing)}"
            )
        self.markets = dict(markets)
        self.currencies = dict(rest.currencies or {})
        self.for_symbols = self.prefer_for_symbols and bool(rest.has.get("watchOHLCVForSymbols"))

    @property
    def subscribe_batch(self) -> int | None:
        """Pairs one watch call may cover (None: any number): 1 without watchOHLCVForSymbols,
        else the exchange's topics per subscription message."""
        return self.venue.subscribe_batch if self.for_symbols else 1

    def page_params(self, since_ms: int, limit: int, bar_ms: int) -> dict[str, Any]:
        """Extra fetch_ohlcv params for one page of ``limit`` bars from ``since_ms``: an end
        for exchanges that answer the newest bars of an open range (Bybit)."""
        if self.venue.bounded_pages:
            return {"until": since_ms + (limit - 1) * bar_ms}
        return {}

    async def watch(self, client: WsClient, pairs: Sequence[tuple[str, str]]) -> object:
        """One watch call; the first one subscribes. With ``watchOHLCVForSymbols`` one call
        (one subscription message) covers up to :attr:`subscribe_batch` pairs, else
        ``pairs`` is a single pair."""
        batch = self.subscribe_batch
        if batch is not None and len(pairs) > batch:
            raise ValueError(f"{self.settings.id} subscribes at most {batch} pairs per message")
        if self.for_symbols:
            return await client.watch_ohlcv_for_symbols([list(p) for p in pairs])
        if len(pairs) != 1:
            raise ValueError(f"{self.settings.id} watches one symbol per call")
        symbol, timeframe = pairs[0]
        return await client.watch_ohlcv(symbol, timeframe)

    @staticmethod
    def cached_rows(client: WsClient, symbol: str, timeframe: str, count: int) -> list[Row]:
        """The newest ``count`` rows of ccxt's own OHLCV cache for one symbol."""
        stored = client.ohlcvs.get(symbol, {}).get(timeframe)
        if not stored:
            return []
        rows = list(stored[-count:])
        stored.getLimit(symbol, None)
        return rows


async def close_within(client: RestClient | WsClient, seconds: float) -> bool:
    """Closes a ccxt client, waiting at most ``seconds``; True when it closed cleanly.

    A close can hang (a websocket close handshake nobody answers, a connection still in
    its handshake): past ``seconds`` the close is cancelled and left to finish on its
    own, never awaited, so even a close that ignores its cancellation cannot hold the
    caller (``asyncio.wait_for`` would wait for the cancellation to complete).
    """
    closing = asyncio.ensure_future(client.close())
    await asyncio.wait({closing}, timeout=seconds)
    if not closing.done():
        closing.cancel()
        closing.add_done_callback(consume_outcome)
        log.warning("exchange client did not close in time, left behind", seconds=seconds)
        return False
    error = None if closing.cancelled() else closing.exception()
    if error is not None:
        log.debug("closing an exchange client failed", error=repr(error))
    return error is None and not closing.cancelled()


def consume_outcome(future: asyncio.Future[Any]) -> None:
    """A done callback for a call left behind: its error is retrieved (asyncio would log
    one nobody retrieved), as the caller has moved on."""
    if not future.cancelled():
        future.exception()


def retry_after_seconds(client: RestClient, now_ms: float | None = None) -> float | None:
    """How long the client's last HTTP response asked to wait, if it said: Retry-After
    (seconds; Binance), else X-Bapi-Limit-Reset-Timestamp (ms, wall clock; Bybit)."""
    headers = {
        str(k).lower(): v
        for k, v in dict(getattr(client, "last_response_headers", None) or {}).items()
    }
    try:
        if "retry-after" in headers:
            return max(0.0, float(headers["retry-after"]))
        if "x-bapi-limit-reset-timestamp" in headers:
            now = time.time() * 1000 if now_ms is None else now_ms
            return max(0.0, (float(headers["x-bapi-limit-reset-timestamp"]) - now) / 1000)
    except (TypeError, ValueError):
        return None
    return None
