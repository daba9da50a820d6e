"""Closed-candle flags that ccxt's unified OHLCV output drops, one mixin per exchange.

Each mixin wraps its exchange's ccxt ``handle_ohlcv``: a message of the wrong shape
is counted as malformed (the sink's ``on_malformed``) and goes no further; a good one
still goes through ccxt (its cache stays whole), then each candle in it reaches the
sink as ``(symbol, timeframe, [open_ms, o, h, l, c, v], closed, event_ms)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamer.ccxt_ports import KlineSink

MAX_NAMES = 100_000
Names = dict[tuple[Any, Any], tuple[str, str]]


class _Flag:
    """What every closed-flag mixin shares: the sink and the name cache."""

    whalecast_sink: KlineSink | None = None
    whalecast_names: Names | None = None

    def _resolve(
        self, key: tuple[Any, Any], lookup: Callable[[], tuple[str, str]]
    ) -> tuple[str, str]:
        """Market id and interval → our symbol and timeframe, looked up once each."""
        names = self.whalecast_names
        if names is None:
            names = self.whalecast_names = {}
        resolved = names.get(key)
        if resolved is None:
            resolved = lookup()
            if len(names) < MAX_NAMES:
                names[key] = resolved
        return resolved

    def _deliver(self, pair: tuple[str, str], row: list[Any], closed: bool, event_ms: Any) -> None:
        sink = self.whalecast_sink
        if sink is None:
            return
        symbol, timeframe = pair
        sink.on_kline(symbol, timeframe, row, closed, event_ms if _is_int(event_ms) else None)
        if closed:
            exchange: Any = self
            stored = exchange.ohlcvs.get(symbol, {}).get(timeframe)
            if stored is not None:
                stored.getLimit(symbol, None)  # lets ccxt clear its per-cache update tracker

    def _malformed(self) -> None:
        if self.whalecast_sink is not None:
            self.whalecast_sink.on_malformed()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class BinanceClosedFlag(_Flag):
    """Binance's ``k.x``. A real event (prices are strings, ``T = t + interval - 1``)::

    {"e": "kline", "E": 1767229200012, "s": "BTCUSDT",
     "k": {"t": 1767225600000, "T": 1767229199999, "s": "BTCUSDT", "i": "1h",
           "f": 5712360421, "L": 5712520003, "o": "87648.21", "c": "87867.96",
           "h": "88017.00", "l": "87580.00", "v": "512.33041", "n": 159583,
           "x": true, "q": "44981223.57", "V": "250.10422", "Q": "21957610.10",
           "B": "0"}}
    """

    def handle_ohlcv(self, client: Any, message: Any) -> None:
        kline = message.get("k") if isinstance(message, dict) else None
        if not isinstance(kline, dict) or not _is_int(kline.get("t")):
            self._malformed()
            return
        super().handle_ohlcv(client, message)  # type: ignore[misc]
        exchange: Any = self
        key = (kline.get("s"), kline.get("i"))
        pair = self._resolve(key, lambda: (exchange.safe_symbol(key[0], None, None, "spot"),
                                           exchange.find_timeframe(key[1])))  # fmt: skip
        row = [kline["t"], kline.get("o"), kline.get("h"), kline.get("l"), kline.get("c"),
               kline.get("v")]  # fmt: skip
        self._deliver(pair, row, kline.get("x") is True, message.get("E"))


class BybitClosedFlag(_Flag):
    """Bybit v5's ``data[].confirm`` (true on the candle's last update). A real event::

    {"topic": "kline.5.BTCUSDT", "ts": 1672324988882, "type": "snapshot",
     "data": [{"start": 1672324800000, "end": 1672325099999, "interval": "5",
               "open": "16649.5", "close": "16677", "high": "16677", "low": "16608",
               "volume": "2.081", "turnover": "34666.4005", "confirm": false,
               "timestamp": 1672324988882}]}
    """

    def handle_ohlcv(self, client: Any, message: Any) -> None:
        topic = message.get("topic") if isinstance(message, dict) else None
        data = message.get("data") if isinstance(message, dict) else None
        parts = topic.split(".") if isinstance(topic, str) else []
        if len(parts) != 3 or not isinstance(data, list) or not all(_bybit_candle(d) for d in data):
            self._malformed()
            return
        super().handle_ohlcv(client, message)  # type: ignore[misc]
        exchange: Any = self
        pair = self._resolve((parts[2], parts[1]), lambda: (
            exchange.safe_symbol(parts[2], None, None, "spot"), exchange.find_timeframe(parts[1])))  # fmt: skip
        for candle in data:
            row = [candle["start"], candle.get("open"), candle.get("high"), candle.get("low"),
                   candle.get("close"), candle.get("volume")]  # fmt: skip
            self._deliver(pair, row, candle.get("confirm") is True, message.get("ts"))


def _bybit_candle(candle: Any) -> bool:
    return isinstance(candle, dict) and _is_int(candle.get("start"))


class OkxClosedFlag(_Flag):
    """OKX v5's candle state, the last element of each candle array ("1": complete).
    A real push (ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm; no event time)::

        {"arg": {"channel": "candle1D", "instId": "BTC-USDT"},
         "data": [["1597026383085", "8533.02", "8553.74", "8527.17", "8548.26", "45247",
                   "529.5858061", "529.5858061", "0"]]}
    """

    def handle_ohlcv(self, client: Any, message: Any) -> None:
        arg = message.get("arg") if isinstance(message, dict) else None
        data = message.get("data") if isinstance(message, dict) else None
        channel = arg.get("channel") if isinstance(arg, dict) else None
        inst = arg.get("instId") if isinstance(arg, dict) else None
        if not (isinstance(channel, str) and isinstance(inst, str) and isinstance(data, list)
                and all(_okx_candle(c) for c in data)):  # fmt: skip
            self._malformed()
            return
        exchange: Any = self
        if inst in (exchange.markets_by_id or {}):  # ccxt's handler fails on an unknown one
            super().handle_ohlcv(client, message)  # type: ignore[misc]
        interval = channel.removeprefix("candle")
        pair = self._resolve((inst, interval), lambda: (
            exchange.safe_symbol(inst), exchange.find_timeframe(interval)))  # fmt: skip
        bar_ms = int(exchange.parse_timeframe(pair[1]) * 1000) if pair[1] else 0
        for candle in data:
            row, closed = [int(candle[0]), *candle[1:6]], candle[8] == "1"
            self._deliver(pair, row, closed, _okx_time(row[0], bar_ms, closed))


def _okx_time(open_ms: int, bar_ms: int, closed: bool) -> int | None:
    """A push carries no time of its own, but OKX's clock has reached the candle's open
    (its end, once complete): the time a replayed clock may follow. None off the grid."""
    if bar_ms <= 0 or open_ms % bar_ms:
        return None
    return open_ms + bar_ms if closed else open_ms


def _okx_candle(candle: Any) -> bool:
    return (
        isinstance(candle, list)
        and len(candle) >= 9
        and isinstance(candle[0], str)
        and candle[0].isdigit()
    )
