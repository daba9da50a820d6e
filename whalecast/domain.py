"""Normalized record types: the boundary past which no exchange specifics go.

Every timestamp is integer milliseconds since the epoch, UTC. Symbols are our
own (ccxt-unified) names such as ``BTC/USDT``. All records are frozen.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

_TIMEFRAME_RE: Final = re.compile(r"^([1-9][0-9]*)([smhdw])$")
_UNIT_MS: Final = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


@functools.lru_cache(maxsize=256)  # hot: every candle's checks and close time use it
def timeframe_ms(timeframe: str) -> int:
    """Length of one bar in milliseconds, e.g. ``timeframe_ms("1h") == 3_600_000``.

    Weekly bars are aligned on the epoch grid (a Thursday); the daemon is meant
    for intraday timeframes and does not special-case calendar weeks or months.
    """
    match = _TIMEFRAME_RE.match(timeframe)
    if match is None:
        raise ValueError(f"unsupported timeframe {timeframe!r} (expected e.g. 1m, 5m, 1h, 1d)")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def floor_to_bar(ts_ms: int, bar_ms: int) -> int:
    """Open time of the bar that contains ``ts_ms``."""
    return ts_ms - ts_ms % bar_ms


@dataclass(frozen=True, slots=True, order=True)
class Series:
    """One candle series: an exchange, one of our symbols, a timeframe."""

    exchange: str
    symbol: str
    timeframe: str

    @property
    def tag(self) -> str:
        """``binance:BTC/USDT:1h``: the id used in Redis keys, messages and hashing."""
        return f"{self.exchange}:{self.symbol}:{self.timeframe}"

    @property
    def bar_ms(self) -> int:
        return timeframe_ms(self.timeframe)

    @property
    def base_asset(self) -> str:
        return self.symbol.split("/", 1)[0].upper()

    @classmethod
    def from_tag(cls, tag: str) -> Series:
        exchange, symbol, timeframe = tag.split(":")
        return cls(exchange, symbol, timeframe)


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV bar. ``open_ms`` is the bar's key; it sits on the timeframe grid."""

    exchange: str
    symbol: str
    timeframe: str
    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    closed: bool = True

    @property
    def series(self) -> Series:
        return _series(self.exchange, self.symbol, self.timeframe)

    @property
    def close_ms(self) -> int:
        """Exclusive end of the bar (the next bar's open time)."""
        return self.open_ms + timeframe_ms(self.timeframe)

    def problem(self) -> str | None:
        """The reason this candle is invalid, or ``None``. Reasons are metric labels."""
        # straight-line checks: the feed and the store ask once per candle, thousands per bar
        o, h, low, c, v = self.open, self.high, self.low, self.close, self.volume
        finite = math.isfinite
        if not (finite(o) and finite(h) and finite(low) and finite(c) and finite(v)):
            return "non_finite"
        if v < 0 or o <= 0 or h <= 0 or low <= 0 or c <= 0:
            return "non_positive"
        if h < low:
            return "high_below_low"
        if not (low <= c <= h and low <= o <= h):
            return "price_outside_range"
        if self.open_ms % timeframe_ms(self.timeframe) != 0:
            return "off_grid"
        return None


#: One shared Series object per name (candles ask for theirs many times per bar).
_series = functools.lru_cache(maxsize=65_536)(Series)


class Flow(StrEnum):
    """Direction of a whale transfer relative to exchanges."""

    INFLOW = "inflow"  # from a non-exchange owner to an exchange
    OUTFLOW = "outflow"  # from an exchange to a non-exchange owner
    INTERNAL = "internal"  # exchange to exchange
    OTHER = "other"  # neither side is an exchange, or unknown


@dataclass(frozen=True, slots=True)
class WhaleTransfer:
    """One large on-chain transfer of one asset.

    ``ts_ms`` is its block time; ``known_ms`` when it could first be used (its
    knowledge time, which decides its bar: :mod:`streamer.whale_rule`), None until set.
    """

    ts_ms: int
    blockchain: str
    asset: str
    amount: float
    usd: float
    from_type: str
    to_type: str
    flow: Flow
    known_ms: int | None = None


def classify_flow(from_type: str, to_type: str) -> Flow:
    """Exchange inflow/outflow from the owner types of both sides."""
    from_exchange = from_type == "exchange"
    to_exchange = to_type == "exchange"
    if to_exchange and not from_exchange:
        return Flow.INFLOW
    if from_exchange and not to_exchange:
        return Flow.OUTFLOW
    if from_exchange and to_exchange:
        return Flow.INTERNAL
    return Flow.OTHER


@dataclass(frozen=True, slots=True)
class WhaleBar:
    """Whale aggregates of one series' bar: what the feature list reads besides the candle.

    ``inflow_usd`` / ``outflow_usd``: USD of the series' base asset moved into / out
    of exchanges during the bar; ``count``: whale transfers of that asset;
    ``stable_inflow_usd``: market-wide stablecoin exchange inflow during the bar.
    """

    inflow_usd: float = 0.0
    outflow_usd: float = 0.0
    count: int = 0
    stable_inflow_usd: float = 0.0
