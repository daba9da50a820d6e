"""OKX v5 public REST endpoints (spot instruments, time, candles), on the virtual clock.

``GET /api/v5/market/candles?instId=BTC-USDT&bar=1H&after=&before=&limit=`` answers
the newest ``limit`` candles with ``before < ts < after`` (both optional, exclusive),
newest first, from the latest 1440 bars only (limit up to 300, default 100);
``/api/v5/market/history-candles`` the same over all history, at most 100 a page::

    {"code": "0", "msg": "", "data": [["1767225600000", "87648.2", "88017", "87580",
      "87867.9", "512.33041", "44981223.57", "44981223.57", "1"], ...]}

The forming candle is included with ``confirm`` "0". A limit above the maximum is cut
to the maximum: a client asking for 300 older bars at once gets the newest 100 of them.
Errors carry OKX's ``code``; the rate limit is HTTP 429 with code 50011.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamer.simulator.data import Bars
from streamer.simulator.faults import Faults
from streamer.simulator.market import Market
from streamer.simulator.okx_ws import bar_id, candle_array, inst_id
from streamer.simulator.rest import BadRequest, ClockLog, fault_middleware, int_param, served

PREFIX = "/api/v5/"
RECENT_BARS = 1440
MAX_LIMITS = {"candles": 300, "history-candles": 100}
DEFAULT_LIMIT = 100


def okx_answer(data: list[Any], code: str = "0", msg: str = "", status: int = 200) -> web.Response:
    return web.json_response({"code": code, "msg": msg, "data": data}, status=status)


class OkxRest:
    def __init__(self, market: Market, faults: Faults) -> None:
        self.market = market
        self.faults = faults
        self.by_inst = {inst_id(b): b for b in market.series.values()}
        self.faults_middleware = fault_middleware(
            PREFIX, faults, _failure, lambda e: okx_answer([], str(e.code), e.msg, e.status),
            endpoints={"candles": "klines", "history-candles": "klines"},
        )  # fmt: skip
        self.clocks = ClockLog(market)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{PREFIX}public/time", self.time),
            web.get(f"{PREFIX}public/instruments", self.instruments),
            web.get(f"{PREFIX}market/candles", self.candles),
            web.get(f"{PREFIX}market/history-candles", self.candles),
        ]

    async def time(self, request: web.Request) -> web.Response:
        return okx_answer([{"ts": str(self.clocks.told(request))}])

    async def instruments(self, request: web.Request) -> web.Response:
        spot = request.query.get("instType") == "SPOT"
        return okx_answer([_instrument(b) for b in self.market.series.values()] if spot else [])

    async def candles(self, request: web.Request) -> web.Response:
        q, market = request.query, self.market
        bars = self.by_inst.get(q.get("instId", ""))
        if bars is None:
            raise BadRequest("51001", "Instrument ID does not exist.")
        if q.get("bar", "1m") != bar_id(market.timeframe):
            raise BadRequest("51000", "Parameter bar error")
        endpoint = request.path.rsplit("/", 1)[-1]
        limit = int_param(q, "limit", DEFAULT_LIMIT, _illegal)
        if limit is None or limit < 1:
            raise BadRequest("51000", "Parameter limit error")
        after, before = (
            int_param(q, "after", None, _illegal),
            int_param(q, "before", None, _illegal),
        )
        start = None if before is None else before + 1
        end = None if after is None else after - 1
        indices = served(market, self.faults, bars, start, end)
        if endpoint == "candles":
            newest = market.closed_count(bars) + 1
            indices = [i for i in indices if i >= newest - RECENT_BARS]
        chosen = indices[-min(limit, MAX_LIMITS[endpoint]) :]
        return okx_answer([candle_array(market.candle(bars, i)) for i in reversed(chosen)])


def _illegal(name: str) -> BadRequest:
    return BadRequest("51000", f"Parameter {name} error")


def _failure(status: int, retry_after: float) -> web.Response:
    """An injected failure: 429/418 as OKX's rate limit, 500 as its system error."""
    if status in (418, 429):
        return okx_answer([], "50011", "Too Many Requests", 429)
    if status == 500:
        return okx_answer([], "50013", "Systems are busy. Please try again later.", 500)
    return web.Response(status=status, text=f"{status} gateway error", content_type="text/html")


def _instrument(bars: Bars) -> dict[str, Any]:
    return {
        "instType": "SPOT", "instId": inst_id(bars), "uly": "", "instFamily": "",
        "baseCcy": bars.base, "quoteCcy": bars.quote, "settleCcy": "", "ctVal": "",
        "ctMult": "", "ctValCcy": "", "optType": "", "stk": "", "listTime": "1548133413000",
        "expTime": "", "lever": "", "tickSz": "0.00000001", "lotSz": "0.00000001",
        "minSz": "0.00000001", "ctType": "", "alias": "", "state": "live",
        "maxLmtSz": "9999999999", "maxMktSz": "1000000",
    }  # fmt: skip
