"""Every Redis key and channel name whalecast uses, in one place.

Per-series keys carry the series tag in braces, so all keys of one series hash
to one Redis Cluster slot: ``<prefix>:{binance:BTC/USDT:1h}:bars``. Changing a
name here is a contract change (see the README's Redis section).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from whalecast.domain import Series

#: One stored bar, a member of ``<series>:bars``: float64 little-endian, in this order.
BAR_COLUMNS: Final = (
    "open_ms", "open", "high", "low", "close", "volume",
    "whale_inflow_usd", "whale_outflow_usd", "whale_count", "stable_inflow_usd",
)  # fmt: skip
#: The field of ``<prefix>:predictions:stream`` entries holding the prediction's JSON.
STREAM_FIELD: Final = "data"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "whalecast"

    # per series (one Cluster slot each)
    def series_base(self, series: Series) -> str:
        return f"{self.prefix}:{{{series.tag}}}"

    def bars(self, series: Series) -> str:
        """Recent closed bars with their whale aggregates (sorted set by open time)."""
        return f"{self.series_base(series)}:bars"

    def window(self, series: Series) -> str:
        """The newest feature rows, packed float32, oldest first (a string)."""
        return f"{self.series_base(series)}:window"

    def meta(self, series: Series) -> str:
        """Last bar open time, feature-list version, counters (a hash)."""
        return f"{self.series_base(series)}:meta"

    def predicted(self, series: Series) -> str:
        """Open time (ms) of the newest bar whose predictions were published (a string).

        Written in the same pipeline as the predictions; a replica taking the series
        over predicts the stored bars after it, and none before it.
        """
        return f"{self.series_base(series)}:predicted"

    def scores(self, series: Series) -> str:
        """Predictions awaiting their outcome bar, for live scoring (a hash)."""
        return f"{self.series_base(series)}:pending"

    # market-wide whale aggregates (stablecoin flow has no single series)
    def whale_market(self, timeframe: str) -> str:
        return f"{self.prefix}:whale:market:{timeframe}"

    # outputs
    @property
    def predictions_channel(self) -> str:
        return f"{self.prefix}:predictions"

    @property
    def predictions_stream(self) -> str:
        return f"{self.prefix}:predictions:stream"

    @property
    def predictions_streamed(self) -> str:
        """Per series tag, the open time of the newest bar whose predictions went into the
        stream (a hash; written on a Cluster only). Its hash tag is the stream's own name,
        so it lives in the stream's slot and one script updates both."""
        return f"{{{self.predictions_stream}}}:streamed"

    def latest(self, model: str) -> str:
        """The model's newest message per output of each series (a hash; see
        :func:`latest_field` for its fields)."""
        return f"{self.prefix}:latest:{model}"

    @property
    def latest_pattern(self) -> str:
        """SCAN pattern matching every model's latest-value hash."""
        return f"{self.prefix}:latest:*"

    # models
    @property
    def models_channel(self) -> str:
        return f"{self.prefix}:models"

    def artifact(self, model: str, version: str) -> str:
        """A model artifact published through Redis (a hash of file name -> bytes)."""
        return f"{self.prefix}:artifact:{model}:{version}"

    def artifact_current(self, model: str) -> str:
        """The version in service when artifacts are distributed through Redis."""
        return f"{self.prefix}:artifact:{model}:CURRENT"

    # replica status (what the web page shows about models and feeds)
    def replica(self, replica: str) -> str:
        """One daemon's status document (JSON string with a TTL), renewed every few seconds."""
        return f"{self.prefix}:replica:{replica}"

    @property
    def replica_pattern(self) -> str:
        """SCAN pattern matching every replica's status key."""
        return f"{self.prefix}:replica:*"

    @property
    def all_pattern(self) -> str:
        """Pattern matching every key and channel of this deployment (for ACLs)."""
        return f"{self.prefix}:*"


def latest_field(
    series_tag: str, target: str, horizon_bars: int | None, quantile: float | None
) -> str:
    """The field of a message in its model's latest-value hash.

    A message without ``horizon_bars`` (a v1 model's) is under the series tag alone,
    ``binance:BTC/USDT:1h``, as it always was; a horizon output under the tag, target,
    horizon and quantile (when set) joined by ``|``:
    ``binance:BTC/USDT:1h|volume_next_bars|6|0.9``, ``binance:BTC/USDT:1h|p_up_in_bars|6``,
    so a model's outputs do not overwrite each other.
    """
    if horizon_bars is None:
        return series_tag
    return f"{series_tag}|{output_label(target, horizon_bars, quantile)}"


def output_label(target: str, horizon_bars: int, quantile: float | None) -> str:
    """One output of a model, ``volume_next_bars|6|0.9`` or ``p_up_in_bars|6``."""
    if quantile is None:
        return f"{target}|{horizon_bars}"
    return f"{target}|{horizon_bars}|{quantile!r}"
