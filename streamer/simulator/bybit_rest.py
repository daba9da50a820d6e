"""Bybit v5 market endpoints (spot), on the virtual clock.

``GET /v5/market/kline?category=spot&symbol=BTCUSDT&interval=60&start=&end=&limit=``
answers the newest ``limit`` (1-1000, default 200) candles whose time span reaches
into [start, end] (end defaults to now), newest first::

    {"retCode": 0, "retMsg": "OK", "result": {"category": "spot", "symbol": "BTCUSDT",
     "list": [["1670608800000", "17071", "17073", "17027", "17055.5", "268611",
               "15.74462667"], ...]}, "retExtInfo": {}, "time": 1672025956592}

including the bar still forming. A client paging forward from ``start`` alone gets the
newest page, not the one after ``start``: it must bound each page with ``end``. Errors
keep HTTP 200 and carry ``retCode``; the per-endpoint rate limit answers ``retCode``
10006 with ``X-Bapi-Limit-Reset-Timestamp`` (ms, wall clock), the IP limit HTTP 403.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from streamer.simulator.bybit_ws import interval_id, turnover
from streamer.simulator.data import Bars
from streamer.simulator.faults import Faults
from streamer.simulator.market import Market
from streamer.simulator.rest import BadRequest, ClockLog, fault_middleware, int_param, served
from streamer.simulator.wire import fmt

PREFIX = "/v5/"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 200


def bybit_answer(result: Any, now_ms: int, code: int = 0, msg: str = "OK",
                 headers: dict[str, str] | None = None) -> web.Response:  # fmt: skip
    body = {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now_ms}
    return web.json_response(body, headers=headers)


class BybitRest:
    def __init__(self, market: Market, faults: Faults) -> None:
        self.market = market
        self.faults = faults
        self.faults_middleware = fault_middleware(
            PREFIX, faults, self._failure,
            lambda e: bybit_answer({}, self.market.now_ms, int(e.code), e.msg),
            endpoints={"kline": "klines"},
        )  # fmt: skip
        self.clocks = ClockLog(market)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{PREFIX}market/time", self.time),
            web.get(f"{PREFIX}market/instruments-info", self.instruments),
            web.get(f"{PREFIX}market/kline", self.kline),
        ]

    async def time(self, request: web.Request) -> web.Response:
        now = self.clocks.told(request)
        result = {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}
        return bybit_answer(result, now)

    async def instruments(self, request: web.Request) -> web.Response:
        category = request.query.get("category", "linear")
        listed = [_instrument(b) for b in self.market.series.values()] if category == "spot" else []
        result = {"category": category, "list": listed, "nextPageCursor": ""}
        return bybit_answer(result, self.market.now_ms)

    async def kline(self, request: web.Request) -> web.Response:
        q, market = request.query, self.market
        bars = market.by_wire.get(q.get("symbol", ""))
        if q.get("category", "linear") != "spot" or bars is None:
            raise BadRequest(10001, "Not supported symbols")
        if q.get("interval") != interval_id(market.timeframe):
            raise BadRequest(10001, "Invalid period!")
        limit = int_param(q, "limit", DEFAULT_LIMIT, _illegal)
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(10001, "params error: limit must be in [1, 1000]")
        start, end = int_param(q, "start", None, _illegal), int_param(q, "end", None, _illegal)
        first = None if start is None else start - market.bar_ms + 1  # the bar holding start
        chosen = served(market, self.faults, bars, first, end)[-limit:]
        rows = [_row(market, bars, i) for i in reversed(chosen)]
        result = {"category": "spot", "symbol": bars.wire, "list": rows}
        return bybit_answer(result, market.now_ms)

    def _failure(self, status: int, retry_after: float) -> web.Response:
        """429: the endpoint's limit (retCode 10006, HTTP 200); 418: the IP limit (403)."""
        now_ms = self.market.now_ms
        if status == 429:
            reset = int(time.time() * 1000 + retry_after * 1000)
            headers = {"X-Bapi-Limit": "600", "X-Bapi-Limit-Status": "0",
                       "X-Bapi-Limit-Reset-Timestamp": str(reset)}  # fmt: skip
            return bybit_answer({}, now_ms, 10006, "Too many visits!", headers)
        if status == 418:
            return web.Response(status=403, text="access too frequent", content_type="text/html")
        if status == 500:
            return bybit_answer({}, now_ms, 10016, "Internal server error.")
        return web.Response(status=status, text=f"{status} gateway error", content_type="text/html")


def _illegal(name: str) -> BadRequest:
    return BadRequest(10001, f"params error: {name} must be an integer")


def _row(market: Market, bars: Bars, i: int) -> list[str]:
    candle = market.candle(bars, i)
    return [str(candle.open_ms), *(fmt(x) for x in candle.ohlcv), turnover(candle)]


def _instrument(bars: Bars) -> dict[str, Any]:
    return {
        "symbol": bars.wire, "baseCoin": bars.base, "quoteCoin": bars.quote,
        "innovation": "0", "status": "Trading", "marginTrading": "none",
        "lotSizeFilter": {"basePrecision": "0.00000001", "quotePrecision": "0.00000001",
                          "minOrderQty": "0.00000001", "maxOrderQty": "9000000000",
                          "minOrderAmt": "1", "maxOrderAmt": "10000000"},
        "priceFilter": {"tickSize": "0.00000001"},
    }  # fmt: skip
