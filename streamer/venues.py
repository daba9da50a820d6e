"""What differs between the exchanges whalecast knows by name, and a default for the rest.

Per exchange: the mixin that captures its closed-candle flag, the ccxt options that
keep market loading to spot, where ccxt keeps its REST and websocket base URLs, how
many candles one REST page returns in full, whether a page must be bounded at both
ends, and how many topics one subscription message may carry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ccxt.pro

from streamer.closed_flags import BinanceClosedFlag, BybitClosedFlag, OkxClosedFlag

UrlSetter = Callable[[dict[str, Any], str | None, str | None], None]


def _binance_urls(api: dict[str, Any], rest: str | None, ws: str | None) -> None:
    if rest is not None:
        api["public"] = rest  # .../api/v3
    if ws is not None:
        api.setdefault("ws", {})["spot"] = ws  # must contain /stream; ccxt appends /<n>


def _bybit_urls(api: dict[str, Any], rest: str | None, ws: str | None) -> None:
    if rest is not None:
        for key in ("public", "spot", "futures", "v2", "private"):
            api[key] = rest  # ccxt appends /v5/market/...
    if ws is not None:
        api.setdefault("ws", {}).setdefault("public", {})["spot"] = ws  # .../v5/public/spot


def _okx_urls(api: dict[str, Any], rest: str | None, ws: str | None) -> None:
    if rest is not None:
        api["rest"] = rest  # ccxt appends /api/v5/...
    if ws is not None:
        api["ws"] = ws  # .../ws/v5; ccxt appends /business for candle channels


def _generic_urls(api: dict[str, Any], rest: str | None, ws: str | None) -> None:
    if rest is not None:
        api["public"] = rest
    if ws is None:
        return
    current = api.get("ws")
    if isinstance(current, dict):
        current["spot"] = ws
    else:
        api["ws"] = ws


@dataclass(frozen=True)
class Venue:
    closed_flag: type | None = None  # None: closes come from the next bar or the deadline
    options: dict[str, Any] = field(default_factory=dict)
    set_urls: UrlSetter = _generic_urls
    rest_limit: int = 1000  # candles one REST page returns in full
    bounded_pages: bool = False  # newest-first API: each page needs an end, not only a start
    subscribe_batch: int | None = None  # topics per subscription message (None: any number)
    timeframes: frozenset[str] | None = None  # None: whatever ccxt offers


_SPOT_ONLY = {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot"}
# with API keys ccxt would also call private endpoints while loading markets, on hosts
# the URL overrides do not cover: the feed needs neither
_NO_PRIVATE = {"fetchCurrencies": False, "fetchMargins": False}

VENUES = {
    "binance": Venue(BinanceClosedFlag, {**_SPOT_ONLY, **_NO_PRIVATE}, _binance_urls, 1000),
    "bybit": Venue(BybitClosedFlag, {**_SPOT_ONLY, **_NO_PRIVATE}, _bybit_urls, 1000,
                   bounded_pages=True, subscribe_batch=10),
    # OKX's websocket candle channels of 6h and more open on Hong Kong time: not our grid
    "okx": Venue(OkxClosedFlag, {**_SPOT_ONLY, **_NO_PRIVATE}, _okx_urls, 100,
                 timeframes=frozenset({"1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h"})),
}  # fmt: skip


def venue_for(base: type) -> Venue:
    """The venue of a ccxt.pro class (its subclasses, e.g. binanceus, count as their parent)."""
    for name, venue in VENUES.items():
        if issubclass(base, getattr(ccxt.pro, name)):
            return venue
    return Venue()
