"""Bybit v5 public spot websocket (``/v5/public/spot``), as far as klines go.

Client → server, at most 10 topics per request (spot)::

    {"req_id": "1", "op": "subscribe", "args": ["kline.60.BTCUSDT", "kline.60.ETHUSDT"]}

answered ``{"success": true, "ret_msg": "", "conn_id": "...", "req_id": "1",
"op": "subscribe"}`` (``success: false`` and the reason in ``ret_msg`` when refused).
The keepalive is a text ping, ``{"req_id": "2", "op": "ping"}``, answered on spot with
``{"success": true, "ret_msg": "pong", "conn_id": "...", "req_id": "2", "op": "ping"}``;
a connection with no traffic either way for 10 minutes is cut. A kline event (the
candle re-sent on every update, ``confirm`` true on its last one)::

    {"topic": "kline.60.BTCUSDT", "ts": 1767229200012, "type": "snapshot",
     "data": [{"start": 1767225600000, "end": 1767229199999, "interval": "60",
               "open": "87648.21", "close": "87867.96", "high": "88017", "low": "87580",
               "volume": "512.33041", "turnover": "44981223.57", "confirm": true,
               "timestamp": 1767229200012}]}
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from streamer.simulator.data import Bars
from streamer.simulator.hub import Connection
from streamer.simulator.market import Candle
from streamer.simulator.stream import KlineStream, WireKeys
from streamer.simulator.wire import fmt

MAX_ARGS_PER_REQUEST = 10  # spot
MAX_ARGS_CHARS = 21_000  # total length of a connection's subscribed topics
IDLE_SECONDS = 600.0
_INTERVALS = {"1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60",
              "2h": "120", "4h": "240", "6h": "360", "12h": "720", "1d": "D", "1w": "W",
              "1M": "M"}  # fmt: skip


def interval_id(timeframe: str) -> str:
    """Bybit's name of a timeframe (``1h`` → ``60``)."""
    return _INTERVALS[timeframe]


def turnover(candle: Candle) -> str:
    o, h, l, c, v = candle.ohlcv  # noqa: E741
    return f"{v * (o + h + l + c) / 4:.8f}"


class BybitStream(KlineStream):
    name = "bybit"
    keys = WireKeys(times=("start", "end"), open="open", high="high", low="low", close="close",
                    volume="volume", symbol="symbol", closed="confirm")  # fmt: skip

    def topic_for(self, bars: Bars) -> str:
        return f"kline.{interval_id(self.market.timeframe)}.{bars.wire}"

    def fields(self, candle: Candle, bars: Bars) -> Any:
        o, h, l, c, v = (fmt(x) for x in candle.ohlcv)  # noqa: E741
        return {"start": candle.open_ms, "end": candle.open_ms + self.market.bar_ms - 1,
                "interval": interval_id(self.market.timeframe), "open": o, "close": c,
                "high": h, "low": l, "volume": v, "turnover": turnover(candle),
                "confirm": candle.closed, "symbol": bars.wire}  # fmt: skip

    def render(self, fields: Any, bars: Bars, event_ms: int) -> str:
        symbol = fields.pop("symbol")
        topic = f"kline.{interval_id(self.market.timeframe)}.{symbol}"
        data = [{**fields, "timestamp": event_ms}]
        message = {"topic": topic, "data": data, "ts": event_ms, "type": "snapshot"}
        return json.dumps(message, separators=(",", ":"))

    async def on_text(self, conn: Connection, text: str) -> None:
        await self.reply(conn, json.dumps(self._answer(conn, text), separators=(",", ":")))

    def _answer(self, conn: Connection, text: str) -> dict[str, Any]:
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return _reply(conn, None, None, False, "error:request not json")
        op, rid, args = request.get("op"), request.get("req_id"), request.get("args") or []
        if op == "ping":
            self.counters["exchange_pings"] += 1
            return _reply(conn, rid, op, True, "pong")
        if op not in ("subscribe", "unsubscribe"):
            return _reply(conn, rid, op, False, f"error:handler not found,op:{op}")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            return _reply(conn, rid, op, False, "error:args must be a list of topics")
        if op == "unsubscribe":
            conn.streams.difference_update(args)
            return _reply(conn, rid, op, True, "")
        return self._subscribe(conn, rid, args)

    def _subscribe(self, conn: Connection, rid: Any, args: list[str]) -> dict[str, Any]:
        if len(args) > MAX_ARGS_PER_REQUEST:
            self.counters["exchange_too_many_streams"] += 1
            return _reply(conn, rid, "subscribe", False, f"args size >{MAX_ARGS_PER_REQUEST}")
        known = {self.topic(b) for b in self.market.series.values()}
        unknown = [a for a in args if a not in known]
        if unknown:
            return _reply(
                conn, rid, "subscribe", False, f"error:handler not found,topic:{unknown[0]}"
            )
        wanted = conn.streams.union(args)
        if sum(len(t) for t in wanted) > MAX_ARGS_CHARS or len(wanted) > self.max_streams:
            self.counters["exchange_too_many_streams"] += 1
            return _reply(conn, rid, "subscribe", False, "error:too many topics on this connection")
        conn.streams = wanted
        return _reply(conn, rid, "subscribe", True, "")


def _reply(conn: Connection, rid: Any, op: Any, success: bool, message: str) -> dict[str, Any]:
    return {"success": success, "ret_msg": message, "conn_id": _conn_id(conn),
            "req_id": "" if rid is None else str(rid), "op": op}  # fmt: skip


def _conn_id(conn: Connection) -> str:
    return str(uuid.UUID(int=conn.id))
