"""Binance's spot websocket market streams, as far as kline subscriptions go.

Client → server (one message may subscribe many streams)::

    {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h", "ethusdt@kline_1h"], "id": 1}

answered ``{"result": null, "id": 1}``; errors come as
``{"error": {"code": 2, "msg": "Invalid request: ..."}, "id": 1}``. Events go out raw
(as on ``/ws``), see :mod:`streamer.simulator.wire`. Limits as Binance documents
them: at most 1024 streams per connection, at most 5 incoming messages per second
(pings included), else the connection is closed; the server pings every 20 s.
"""

from __future__ import annotations

import json
from typing import Any

from streamer.simulator.data import Bars
from streamer.simulator.hub import Connection
from streamer.simulator.market import Candle
from streamer.simulator.stream import KlineStream, WireKeys
from streamer.simulator.wire import kline_event, kline_fields, kline_text

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS")


class BinanceStream(KlineStream):
    name = "binance"
    keys = WireKeys(times=("t", "T"), open="o", high="h", low="l", close="c", volume="v",
                    symbol="s", closed="x")  # fmt: skip

    def topic_for(self, bars: Bars) -> str:
        return f"{bars.wire.lower()}@kline_{self.market.timeframe}"

    def stream_name(self, bars: Bars) -> str:
        return self.topic(bars)

    def fields(self, candle: Candle, bars: Bars) -> Any:
        return kline_fields(candle, bars.wire, self.market.timeframe, self.market.bar_ms)

    def render(self, fields: Any, bars: Bars, event_ms: int) -> str:
        return kline_event(fields, event_ms)

    def event_text(self, candle: Candle, bars: Bars, event_ms: int) -> str:
        market = self.market
        return kline_text(candle, bars.wire, market.timeframe, market.bar_ms, event_ms)

    async def on_text(self, conn: Connection, text: str) -> None:
        reply = self._on_request(conn, text)
        await self.reply(conn, json.dumps(reply, separators=(",", ":")))

    def _on_request(self, conn: Connection, text: str) -> dict[str, Any]:
        try:
            rid, method, params = _parse_request(text)
        except RequestError as e:
            return e.reply
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.streams), "id": rid}
        if method == "UNSUBSCRIBE":
            conn.streams.difference_update(params)
            return {"result": None, "id": rid}
        wanted = conn.streams.union(params)
        if len(wanted) > self.max_streams:
            self.counters["exchange_too_many_streams"] += 1
            msg = f"Invalid request: too many streams (max {self.max_streams} per connection)"
            return _error(2, msg, rid)
        conn.streams = wanted
        return {"result": None, "id": rid}


def _error(code: int, msg: str, rid: Any) -> dict[str, Any]:
    return {"error": {"code": code, "msg": msg}, "id": rid}


class RequestError(Exception):
    """A client request Binance would refuse; ``reply`` is the error message to send."""

    def __init__(self, code: int, msg: str, rid: Any = None) -> None:
        super().__init__(msg)
        self.reply = _error(code, msg, rid)


def _parse_request(text: str) -> tuple[Any, str, list[str]]:
    """``(id, method, params)`` of a control message, or :class:`RequestError`."""
    try:
        request = json.loads(text)
    except ValueError as e:
        raise RequestError(3, f"Invalid JSON: {e}") from e
    if not isinstance(request, dict):
        raise RequestError(2, "Invalid request: expected an object")
    rid, method, params = request.get("id"), request.get("method"), request.get("params", [])
    if method not in METHODS:
        msg = f"Invalid request: unknown variant {method!r}, expected one of {', '.join(METHODS)}"
        raise RequestError(2, msg, rid)
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise RequestError(1, "Invalid value type: expected a list of stream names", rid)
    return rid, method, params
