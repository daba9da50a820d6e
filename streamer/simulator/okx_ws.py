"""OKX v5 business websocket (``/ws/v5/business``), as far as candle channels go.

Client → server::

    {"op": "subscribe", "args": [{"channel": "candle1H", "instId": "BTC-USDT"}]}

answered per argument with ``{"event": "subscribe", "arg": {...}, "connId": "..."}``,
refusals with ``{"event": "error", "code": "60018", "msg": "...", "connId": "..."}``.
The keepalive is the text ``ping``, answered ``pong``; a connection with no traffic
either way for 30 s is closed. A candle push (re-sent on every update; the last
element, ``confirm``, turns "1" once the candle is complete)::

    {"arg": {"channel": "candle1H", "instId": "BTC-USDT"},
     "data": [["1767225600000", "87648.2", "88017", "87580", "87867.9", "512.33041",
               "44981223.57", "44981223.57", "1"]]}

Fields: ts, o, h, l, c, vol (base), volCcy (quote), volCcyQuote, confirm.
"""

from __future__ import annotations

import json
from typing import Any

from streamer.simulator.bybit_ws import turnover
from streamer.simulator.data import Bars
from streamer.simulator.hub import Connection
from streamer.simulator.market import Candle
from streamer.simulator.stream import KlineStream, WireKeys
from streamer.simulator.wire import fmt

IDLE_SECONDS = 30.0
MAX_ARGS_BYTES = 64 * 1024  # one request's arguments
_BARS = {"1m": "1m", "3m": "3m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "1H",
         "2h": "2H", "4h": "4H", "6h": "6Hutc", "12h": "12Hutc", "1d": "1Dutc",
         "1w": "1Wutc", "1M": "1Mutc"}  # fmt: skip
_SYMBOL = 9  # where fields() keeps the instId (not part of the candle array)


def bar_id(timeframe: str) -> str:
    """OKX's bar name of a UTC-aligned timeframe (``1h`` → ``1H``, ``1d`` → ``1Dutc``)."""
    return _BARS[timeframe]


def inst_id(bars: Bars) -> str:
    return f"{bars.base}-{bars.quote}"


def candle_array(candle: Candle) -> list[str]:
    quote = turnover(candle)
    return [str(candle.open_ms), *(fmt(x) for x in candle.ohlcv), quote, quote,
            "1" if candle.closed else "0"]  # fmt: skip


class OkxStream(KlineStream):
    name = "okx"
    keys = WireKeys(times=(0,), open=1, high=2, low=3, close=4, volume=5, symbol=_SYMBOL,
                    closed=8)  # fmt: skip

    def topic_for(self, bars: Bars) -> str:
        return f"candle{bar_id(self.market.timeframe)}:{inst_id(bars)}"

    def fields(self, candle: Candle, bars: Bars) -> Any:
        return [*candle_array(candle), inst_id(bars)]

    def render(self, fields: Any, bars: Bars, event_ms: int) -> str:
        arg = {"channel": f"candle{bar_id(self.market.timeframe)}", "instId": fields[_SYMBOL]}
        return json.dumps({"arg": arg, "data": [fields[:_SYMBOL]]}, separators=(",", ":"))

    async def on_text(self, conn: Connection, text: str) -> None:
        if text == "ping":
            self.counters["exchange_pings"] += 1
            await self.reply(conn, "pong")
            return
        for answer in self._answers(conn, text):
            await self.reply(conn, json.dumps(answer, separators=(",", ":")))

    def _answers(self, conn: Connection, text: str) -> list[dict[str, Any]]:
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        op = request.get("op") if isinstance(request, dict) else None
        args = request.get("args") if isinstance(request, dict) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            return [_error(conn, "60012", f"Illegal request: {text[:200]}")]
        if len(text.encode()) > MAX_ARGS_BYTES:
            self.counters["exchange_too_many_streams"] += 1
            return [_error(conn, "60014", "Requests too frequent or too large.")]
        known = {self.topic(b) for b in self.market.series.values()}
        answers = []
        for arg in args:
            topic = _topic(arg)
            if topic not in known:
                msg = f"Wrong URL or channel:{topic}, doesn't exist. Please use the correct URL."
                answers.append(_error(conn, "60018", msg))
                continue
            if op == "subscribe":
                conn.streams.add(topic)
            else:
                conn.streams.discard(topic)
            answers.append({"event": op, "arg": arg, "connId": _conn_id(conn)})
        return answers


def _topic(arg: Any) -> str | None:
    if not isinstance(arg, dict):
        return None
    return f"{arg.get('channel')}:{arg.get('instId')}"


def _error(conn: Connection, code: str, msg: str) -> dict[str, Any]:
    return {"event": "error", "code": code, "msg": msg, "connId": _conn_id(conn)}


def _conn_id(conn: Connection) -> str:
    return f"{conn.id:08x}"
