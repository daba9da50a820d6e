"""Binance's spot REST market-data endpoints under ``/api/v3``, on the virtual clock.

``GET /api/v3/klines?symbol=BTCUSDT&interval=1h&startTime=&endTime=&limit=`` answers
rows like ``[1591478520000,"0.02501300","0.02501800","0.02500000","0.02500000",
"22.19000000",1591478579999,"0.55490906",40,"10.92900000","0.27336462","0"]``: every
bar closed before the virtual now plus the one still forming (a client must not take
the last row for closed), never a bar from the future. Errors use Binance's JSON
shape ``{"code": -1121, "msg": "Invalid symbol."}``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamer.simulator.data import Bars
from streamer.simulator.faults import Faults
from streamer.simulator.market import Market
from streamer.simulator.rest import BadRequest, ClockLog, fault_middleware, int_param, served
from streamer.simulator.wire import rest_row

API = "/api/v3"
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
_ERROR_BODIES = {
    429: (-1003, "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute."),
    418: (-1003, "Way too many requests; IP(127.0.0.1) banned until further notice."),
}


def binance_error(
    status: int, code: int, msg: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


class BinanceRest:
    def __init__(self, market: Market, faults: Faults) -> None:
        self.market = market
        self.faults = faults
        self.faults_middleware = fault_middleware(
            API + "/", faults, _failure, lambda e: binance_error(e.status, int(e.code), e.msg)
        )
        self.clocks = ClockLog(market)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{API}/ping", self.ping),
            web.get(f"{API}/time", self.time),
            web.get(f"{API}/exchangeInfo", self.exchange_info),
            web.get(f"{API}/klines", self.klines),
        ]

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": self.clocks.told(request)})

    async def exchange_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": self.market.now_ms,
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 6000,
                    },
                    {
                        "rateLimitType": "RAW_REQUESTS",
                        "interval": "MINUTE",
                        "intervalNum": 5,
                        "limit": 61000,
                    },
                ],
                "exchangeFilters": [],
                "symbols": [_symbol_info(b) for b in self.market.series.values()],
            }
        )

    async def klines(self, request: web.Request) -> web.Response:
        q = request.query
        bars = self.market.by_wire.get(q.get("symbol", ""))
        if bars is None:
            raise BadRequest(-1121, "Invalid symbol.")
        if q.get("interval") != self.market.timeframe:
            raise BadRequest(-1120, "Invalid interval.")
        limit = int_param(q, "limit", DEFAULT_LIMIT, _illegal)
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = (
            int_param(q, "startTime", None, _illegal),
            int_param(q, "endTime", None, _illegal),
        )
        market = self.market
        indices = served(market, self.faults, bars, start, end)
        chosen = indices[:limit] if start is not None else indices[-limit:]
        return web.json_response([rest_row(market.candle(bars, i), market.bar_ms) for i in chosen])


def _failure(status: int, retry_after: float) -> web.Response:
    """An injected failure: Binance's JSON for 429/418/500, a gateway's text page for 502-504."""
    if status in _ERROR_BODIES:
        code, msg = _ERROR_BODIES[status]
        return binance_error(status, code, msg, {"Retry-After": str(int(retry_after))})
    if status == 500:
        return binance_error(500, -1000, "An unknown error occurred while processing the request.")
    return web.Response(status=status, text=f"{status} gateway error", content_type="text/html")


def _illegal(name: str) -> BadRequest:
    return BadRequest(
        -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
    )


def _symbol_info(bars: Bars) -> dict[str, Any]:
    return {
        "symbol": bars.wire,
        "status": "TRADING",
        "baseAsset": bars.base,
        "baseAssetPrecision": 8,
        "quoteAsset": bars.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"],
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.00000001",
                "maxPrice": "1000000.00000000",
                "tickSize": "0.00000001",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00000001",
                "maxQty": "9000000000.00000000",
                "stepSize": "0.00000001",
            },
        ],
    }
