"""Binance's spot REST market-data endpoints under ``/api/v3``, on the virtual clock.

``GET /api/v3/klines?symbol=BTCUSDT&interval=1h&startTime=&endTime=&limit=`` answers
rows like ``[1591478520000,"0.02501300","0.02501800","0.02500000","0.02500000",
"22.19000000",1591478579999,"0.55490906",40,"10.92900000","0.27336462","0"]``: every
bar closed before the virtual now plus the one still forming (a client must not take
the last row for closed), never a bar from the future. Errors use Binance's JSON
shape ``{"code": -1121, "msg": "Invalid symbol."}``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from streamer.simulator.data import Bars
from streamer.simulator.faults import Faults
from streamer.simulator.market import Market
from streamer.simulator.wire import rest_row

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API = "/api/v3"
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
_ERROR_BODIES = {
    429: (-1003, "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute."),
    418: (-1003, "Way too many requests; IP(127.0.0.1) banned until further notice."),
}


class BadRequest(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def binance_error(
    status: int, code: int, msg: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


class BinanceRest:
    def __init__(self, market: Market, faults: Faults) -> None:
        self.market = market
        self.faults = faults
        # per client connection (peer address): wall time of its last time request, and the
        # virtual time it was told; tests wait on it for every polling clock to catch up
        self.time_told: dict[str, tuple[float, int]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{API}/ping", self.ping),
            web.get(f"{API}/time", self.time),
            web.get(f"{API}/exchangeInfo", self.exchange_info),
            web.get(f"{API}/klines", self.klines),
        ]

    @web.middleware
    async def faults_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Injected REST failures, then Binance-style errors for bad parameters."""
        if not request.path.startswith(API + "/"):
            return await handler(request)
        self.faults.counters["rest_requests"] += 1
        failure = self.faults.take_rest_error(request.path.rsplit("/", 1)[-1])
        if failure is not None:
            return _failure(*failure)
        try:
            return await handler(request)
        except BadRequest as e:
            return binance_error(400, e.code, e.msg)

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def time(self, request: web.Request) -> web.Response:
        now_ms = self.market.now_ms
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.time_told[str(peer)] = (time.monotonic(), now_ms)
        return web.json_response({"serverTime": now_ms})

    def clocks_behind(self, recent_seconds: float = 1.0) -> int:
        """Client connections that asked the time in the last ``recent_seconds`` and were
        last told a time older than now (a replay clock that has not seen the last step)."""
        since = time.monotonic() - recent_seconds
        now_ms = self.market.now_ms
        return sum(1 for wall, told in self.time_told.values() if wall >= since and told < now_ms)

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
        limit = _int_param(q, "limit", DEFAULT_LIMIT)
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = _int_param(q, "startTime", None), _int_param(q, "endTime", None)
        market = self.market
        indices = [
            i
            for i in market.visible_range(bars, start, end)
            if not self.faults.in_gap(bars.symbol, int(bars.open_ms[i]))
        ]
        omitted = len(market.visible_range(bars, start, end)) - len(indices)
        self.faults.counters["rest_gap_bars_omitted"] += omitted
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


def _int_param(query: Any, name: str, default: int | None) -> int | None:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise BadRequest(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        ) from e


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
