"""Per-bar whale aggregates: what the features' whale columns are computed from.

Transfers are bucketed by the bar that contains their knowledge time
(:mod:`streamer.whale_rule`), per timeframe and asset. ``take(series, open_ms)``
reads the bucket of the series' base asset; stablecoin exchange inflows are summed
market-wide into every series' ``stable_inflow_usd``. Bars are kept for a day
behind the newest (at least ``keep_bars``), so memory stays bounded and a candle
that closes late still finds its bar; a transfer older than that is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streamer.whale_rule import whale_bar
from whalecast.domain import Flow, Series, WhaleBar, WhaleTransfer

DAY_MS = 86_400_000


@dataclass(slots=True)
class _AssetBucket:
    inflow_usd: float = 0.0
    outflow_usd: float = 0.0
    count: int = 0


@dataclass(slots=True)
class _Bar:
    assets: dict[str, _AssetBucket]
    stable_inflow_usd: float = 0.0


class WhaleBarAggregator:
    """Sums whale transfers into per-series, per-bar :class:`WhaleBar` values."""

    def __init__(
        self,
        series: Sequence[Series],
        stablecoins: Iterable[str],
        keep_bars: int = 8,
        keep_ms: int = DAY_MS,
    ) -> None:
        if keep_bars < 1:
            raise ValueError("keep_bars must be at least 1")
        self.series = list(series)
        self.stablecoins = frozenset(s.upper() for s in stablecoins)
        self._assets = frozenset(s.base_asset for s in self.series) | self.stablecoins
        self._bar_lengths = sorted({s.bar_ms for s in self.series})
        self._keep = {b: max(keep_bars, -(-keep_ms // b)) for b in self._bar_lengths}
        self._bars: dict[int, dict[int, _Bar]] = {bar_ms: {} for bar_ms in self._bar_lengths}
        self._newest: dict[int, int] = {}

    def add(self, transfer: WhaleTransfer) -> str | None:
        """Counts one transfer in its bars; else why not (``unused_asset``, ``late``)."""
        asset = transfer.asset.upper()
        if asset not in self._assets:
            return "unused_asset"
        if transfer.known_ms is None:
            raise ValueError("a whale transfer needs its knowledge time to find its bar")
        stable_inflow = asset in self.stablecoins and transfer.flow is Flow.INFLOW
        used = False
        for bar_ms in self._bar_lengths:
            bucket = self._bucket(bar_ms, whale_bar(transfer.known_ms, bar_ms))
            if bucket is None:
                continue
            used = True
            entry = bucket.assets.setdefault(asset, _AssetBucket())
            entry.count += 1
            if transfer.flow is Flow.INFLOW:
                entry.inflow_usd += transfer.usd
            elif transfer.flow is Flow.OUTFLOW:
                entry.outflow_usd += transfer.usd
            if stable_inflow:
                bucket.stable_inflow_usd += transfer.usd
        return None if used else "late"

    def take(self, series: Series, open_ms: int) -> WhaleBar:
        """The whale aggregates of ``series`` for the bar opening at ``open_ms`` (zeros if none)."""
        bucket = self._bars.get(series.bar_ms, {}).get(open_ms)
        if bucket is None:
            return WhaleBar()
        entry = bucket.assets.get(series.base_asset, _AssetBucket())
        return WhaleBar(entry.inflow_usd, entry.outflow_usd, entry.count, bucket.stable_inflow_usd)

    def _bucket(self, bar_ms: int, open_ms: int) -> _Bar | None:
        bars = self._bars[bar_ms]
        newest = self._newest.get(bar_ms)
        keep = self._keep[bar_ms]
        oldest_kept = (newest if newest is not None else open_ms) - (keep - 1) * bar_ms
        if open_ms < oldest_kept:
            return None
        bucket = bars.get(open_ms)
        if bucket is None:
            bucket = bars[open_ms] = _Bar({})
            if newest is None or open_ms > newest:
                self._newest[bar_ms] = open_ms
                self._forget(bar_ms, open_ms - (keep - 1) * bar_ms)
        return bucket

    def _forget(self, bar_ms: int, oldest_kept: int) -> None:
        bars = self._bars[bar_ms]
        for open_ms in [k for k in bars if k < oldest_kept]:
            del bars[open_ms]
