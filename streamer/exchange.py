"""The ccxt adapter: the one place that knows exchange specifics.

It builds ccxt.pro clients for one configured exchange (URL overrides, rate
limit, bounded OHLCV cache), shares the market list between them, and turns
websocket traffic into calls on a :class:`KlineSink` with plain rows
``[open_ms, open, high, low, close, volume]`` and a closed flag. Past this
module the feed sees only our symbols and those rows.

Binance sends a closed flag (``k.x``) that ccxt's unified output drops;
:class:`_BinanceClosedFlag` captures it. For other exchanges ``closed`` is
None and the feed detects closes by the next bar's appearance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import ccxt
import ccxt.pro

from whalecast.logs import get_logger
from whalecast.settings import ExchangeCredentials, ExchangeSettings, FeedSettings

log = get_logger(__name__)

Row = list[Any]
RATE_LIMIT_ERRORS = (ccxt.RateLimitExceeded, ccxt.DDoSProtection)
MAX_REST_LIMIT = 1000


class FeedConfigError(Exception):
    """The configured exchange or its symbols cannot be served."""


class KlineSink(Protocol):
    """Receives one connection's traffic (called from ccxt's message handlers)."""

    def on_message(self) -> None: ...

    def on_kline(
        self, symbol: str, timeframe: str, row: Row, closed: bool | None, event_ms: int | None
    ) -> None: ...

    def on_malformed(self) -> None: ...

    def on_connected(self) -> None: ...

    def on_lost(self, error: BaseException | None) -> None: ...


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


class _BinanceClosedFlag:
    """Captures Binance's closed flag from kline events.

    A real event (prices are strings, ``T = t + interval - 1``)::

        {"e": "kline", "E": 1767229200012, "s": "BTCUSDT",
         "k": {"t": 1767225600000, "T": 1767229199999, "s": "BTCUSDT", "i": "1h",
               "f": 5712360421, "L": 5712520003, "o": "87648.21", "c": "87867.96",
               "h": "88017.00", "l": "87580.00", "v": "512.33041", "n": 159583,
               "x": true, "q": "44981223.57", "V": "250.10422", "Q": "21957610.10",
               "B": "0"}}
    """

    whalecast_sink: KlineSink | None = None
    whalecast_names: dict[tuple[Any, Any], tuple[str, str]] | None = None

    def handle_ohlcv(self, client: Any, message: Any) -> None:
        sink = self.whalecast_sink
        kline = message.get("k") if isinstance(message, dict) else None
        if not isinstance(kline, dict) or not isinstance(kline.get("t"), int):
            if sink is not None:
                sink.on_malformed()
            return
        super().handle_ohlcv(client, message)  # type: ignore[misc]
        if sink is None:
            return
        exchange: Any = self
        names = self.whalecast_names
        if names is None:
            names = self.whalecast_names = {}
        key = (kline.get("s"), kline.get("i"))
        resolved = names.get(key)
        if resolved is None:  # market id and interval → our symbol and timeframe, once each
            resolved = (exchange.safe_symbol(key[0], None, None, "spot"),
                        exchange.find_timeframe(key[1]))  # fmt: skip
            if len(names) < 100_000:
                names[key] = resolved
        symbol, timeframe = resolved
        row = [kline["t"], kline.get("o"), kline.get("h"), kline.get("l"), kline.get("c"),
               kline.get("v")]  # fmt: skip
        closed = kline.get("x") is True
        event_ms = message.get("E")
        sink.on_kline(
            symbol, timeframe, row, closed, event_ms if isinstance(event_ms, int) else None
        )
        if closed:
            stored = exchange.ohlcvs.get(symbol, {}).get(timeframe)
            if stored is not None:
                stored.getLimit(symbol, None)  # lets ccxt clear its per-cache update tracker


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
        self.is_binance = issubclass(self._base, ccxt.pro.binance)
        self.has_closed_flag = self.is_binance if closed_flag is None else closed_flag
        mixins: tuple[type, ...] = (_Hooks,)
        if self.has_closed_flag:
            if not self.is_binance:
                raise FeedConfigError(f"no closed-flag capture for {settings.id!r}")
            mixins = (_BinanceClosedFlag, _Hooks)
        self._ws_class = type(f"Whalecast{self._base.__name__}", (*mixins, self._base), {})
        self.markets: dict[str, Any] | None = None
        self.currencies: dict[str, Any] | None = None
        self.prefer_for_symbols = True  # False: one subscription message per symbol
        self.for_symbols = False

    def _config(self) -> dict[str, Any]:
        options: dict[str, Any] = {"OHLCVLimit": self.feed.ohlcv_cache_limit}
        if self.is_binance:
            options["fetchMarkets"] = {"types": ["spot"]}
            options["defaultType"] = "spot"
            # with API keys ccxt would also call private wallet and margin endpoints while
            # loading markets, on hosts the URL overrides do not cover: the feed needs neither
            options["fetchCurrencies"] = False
            options["fetchMargins"] = False
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

    def _apply_urls(self, client: Any) -> None:
        api = client.urls.setdefault("api", {})
        if self.settings.rest_url is not None:
            api["public"] = self.settings.rest_url.rstrip("/")
        if self.settings.ws_url is not None:
            ws = api.get("ws")
            if isinstance(ws, dict):
                for key in ("spot", "public"):
                    if key in ws or key == "spot":
                        ws[key] = self.settings.ws_url.rstrip("/")
                        break
            else:
                api["ws"] = self.settings.ws_url.rstrip("/")

    def rest_client(self) -> Any:
        """A client for REST calls (markets, server time, OHLCV backfill)."""
        client = self._base(self._config())
        self._apply_urls(client)
        if self.markets is not None:
            client.set_markets(self.markets, self.currencies)
        return client

    def ws_client(self, sink: KlineSink) -> Any:
        """A fresh websocket client (one connection's worth) reporting to ``sink``."""
        if self.markets is None:
            raise RuntimeError("load_markets() first")
        client = self._ws_class(self._config())
        self._apply_urls(client)
        client.set_markets(self.markets, self.currencies)
        client.whalecast_sink = sink
        return client

    async def load_markets(self, rest: Any) -> None:
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

    async def watch(self, client: Any, pairs: Sequence[tuple[str, str]]) -> Any:
        """One watch call; the first one subscribes. With ``watchOHLCVForSymbols`` one call
        (one subscription message) covers every pair, else ``pairs`` is a single pair."""
        if self.for_symbols:
            return await client.watch_ohlcv_for_symbols([list(p) for p in pairs])
        if len(pairs) != 1:
            raise ValueError(f"{self.settings.id} watches one symbol per call")
        symbol, timeframe = pairs[0]
        return await client.watch_ohlcv(symbol, timeframe)

    @staticmethod
    def cached_rows(client: Any, symbol: str, timeframe: str, count: int) -> list[Row]:
        """The newest ``count`` rows of ccxt's own OHLCV cache for one symbol."""
        stored = client.ohlcvs.get(symbol, {}).get(timeframe)
        if not stored:
            return []
        rows = list(stored[-count:])
        stored.getLimit(symbol, None)
        return rows


def retry_after_seconds(client: Any) -> float | None:
    """The Retry-After header of the client's last HTTP response, if it sent one."""
    headers = getattr(client, "last_response_headers", None) or {}
    for key, value in dict(headers).items():
        if str(key).lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None
