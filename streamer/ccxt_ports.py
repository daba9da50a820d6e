"""What the feed uses of a ccxt client, as protocols (ccxt ships no types).

The adapter (:mod:`streamer.exchange`) builds the clients and is the one place
that knows their classes; everything past it sees a :class:`RestClient` (markets,
server time, OHLCV pages) or a :class:`WsClient` (one connection's watches and
OHLCV cache), and mypy checks each use against what is declared here. A
:class:`KlineSink` is what the adapter's hooks report a websocket client's traffic to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol

#: One OHLCV row as ccxt hands it over: ``[open_ms, open, high, low, close, volume]``,
#: unchecked (:func:`streamer.validation.candle_from_row` checks it).
Row = list[object]


class KlineSink(Protocol):
    """Receives one connection's traffic (called from ccxt's message handlers)."""

    def on_message(self) -> None: ...

    def on_kline(
        self, symbol: str, timeframe: str, row: Row, closed: bool | None, event_ms: int | None
    ) -> None: ...

    def on_malformed(self) -> None: ...

    def on_connected(self) -> None: ...

    def on_lost(self, error: BaseException | None) -> None: ...


class Client(Protocol):
    """What a REST and a websocket client share."""

    urls: dict[str, dict[str, Any]]  # ccxt's nested URL tree, the venue's to edit

    def set_markets(
        self, markets: Mapping[str, object], currencies: Mapping[str, object] | None = None
    ) -> object: ...

    def close(self) -> Awaitable[object]: ...


class RestClient(Client, Protocol):
    """A ccxt client for REST calls."""

    has: Mapping[str, object]
    currencies: Mapping[str, object] | None
    last_response_headers: Mapping[str, object] | None

    def load_markets(self) -> Awaitable[Mapping[str, object]]: ...

    def fetch_time(self) -> Awaitable[int]: ...

    def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str,
        since: int | None = None,
        limit: int | None = None,
        params: Mapping[str, object] | None = None,
    ) -> Awaitable[list[Row] | None]: ...


class OhlcvCache(Protocol):
    """ccxt's per symbol and timeframe cache of the newest rows (``ArrayCacheByTimestamp``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> Sequence[Row]: ...

    def getLimit(self, symbol: str, limit: int | None) -> int: ...


class WsClient(Client, Protocol):
    """A ccxt.pro client of one websocket connection, reporting to its sink."""

    whalecast_sink: KlineSink | None
    ohlcvs: Mapping[str, Mapping[str, OhlcvCache]]

    def watch_ohlcv(self, symbol: str, timeframe: str) -> Awaitable[list[Row]]: ...

    def watch_ohlcv_for_symbols(self, pairs: list[list[str]]) -> Awaitable[object]: ...
