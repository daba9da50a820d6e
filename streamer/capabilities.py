"""What ccxt says an exchange can do, read offline from its class (no network).

``whalecast check-config`` asks here whether a configured exchange id has a
websocket OHLCV client in ccxt (``ccxt.pro``) and which timeframes that
exchange's class lists. Part of the exchange adapter layer: past it only our
own names travel (ids, timeframe strings).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import ccxt
import ccxt.pro


@dataclass(frozen=True)
class ExchangeCapabilities:
    id: str
    timeframes: tuple[str, ...]  # as ccxt's class lists them, e.g. ("1m", "5m", "1h")


class NotServable(ValueError):
    """The exchange id cannot be served by the candle feed; the message says why."""


def capabilities(exchange_id: str) -> ExchangeCapabilities:
    """The id's capabilities, or :class:`NotServable` naming the problem (and close ids)."""
    base = getattr(ccxt.pro, exchange_id, None)
    if exchange_id in ccxt.exchanges and exchange_id not in ccxt.pro.exchanges:
        raise NotServable(f"{exchange_id!r} has only a REST client in ccxt, no websocket one")
    if exchange_id not in ccxt.pro.exchanges or not isinstance(base, type):
        close = difflib.get_close_matches(exchange_id, ccxt.pro.exchanges, n=3, cutoff=0.75)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise NotServable(
            f"{exchange_id!r} is not an exchange with a ccxt websocket (ccxt.pro) client{hint}"
        )
    client = base()
    has = client.has
    if not (has.get("watchOHLCVForSymbols") or has.get("watchOHLCV")):
        raise NotServable(f"{exchange_id!r} has no websocket OHLCV (watchOHLCV) in ccxt")
    return ExchangeCapabilities(exchange_id, tuple(client.timeframes or ()))
