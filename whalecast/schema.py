"""The prediction message, schema ``whalecast.prediction/v1``.

One JSON object per series, model and bar, published unchanged to the pub/sub
channel, the capped stream and the latest-value hash::

    {"schema": "whalecast.prediction/v1", "exchange": "binance", "symbol": "BTC/USDT",
     "timeframe": "1h", "bar_open_ms": 1767225600000, "bar_close_ms": 1767229200000,
     "model": "direction", "model_version": "20261122T060000Z-3f2a",
     "target": "p_up_next_bar", "value": 0.5431, "published_ms": 1767229200042,
     "latency_ms": 42.0}

``bar_open_ms``/``bar_close_ms`` are the last closed bar the prediction was made
from; the prediction is about the bar that opens at ``bar_close_ms``.
``latency_ms`` is wall time from that bar's close being known to publishing.

A model with several outputs (:class:`whalecast.artifact.OutputSpec`) publishes one
message per output; the horizon targets add ``horizon_bars`` and, for a volume
quantile, ``quantile`` after ``target``::

    {..., "target": "volume_next_bars", "horizon_bars": 6, "quantile": 0.9,
     "value": 18342.5, ...}

The two fields are absent when unset, so a v1 message (``p_up_next_bar``,
``next_bar_volume``) is byte for byte what it was before they existed.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from whalecast.targets import MEANING, Target

SCHEMA_ID = "whalecast.prediction/v1"

#: Targets a model may declare, and what ``value`` then means.
TARGETS = MEANING


class Prediction(BaseModel):
    """Validating model of one message; consumers may use it to parse."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_id: Literal["whalecast.prediction/v1"] = Field("whalecast.prediction/v1", alias="schema")
    exchange: str
    symbol: str
    timeframe: str
    bar_open_ms: int
    bar_close_ms: int
    model: str
    model_version: str
    target: Target
    horizon_bars: int | None = Field(default=None, ge=1)
    quantile: float | None = Field(default=None, gt=0, lt=1)
    value: float
    published_ms: int
    latency_ms: float = Field(ge=0)

    @classmethod
    def parse(cls, raw: str | bytes) -> Prediction:
        return cls.model_validate_json(raw)


def encode_prediction(
    *,
    exchange: str,
    symbol: str,
    timeframe: str,
    bar_open_ms: int,
    bar_close_ms: int,
    model: str,
    model_version: str,
    target: str,
    value: float,
    published_ms: int,
    latency_ms: float,
    horizon_bars: int | None = None,
    quantile: float | None = None,
) -> str:
    """The message, byte for byte what ``json.dumps`` with the schema's key order and
    ``separators=(",", ":")`` gives (ValueError for a non-finite number).

    Fast path for the publisher (thousands per bar): the string fields of a series
    and of a model version are encoded once and cached; numbers are formatted as
    ``json`` formats them (``int.__repr__``, ``float.__repr__``). ``horizon_bars``
    and ``quantile`` are written only when set.
    """
    value_text = _float_text(round(float(value), 8))
    latency_text = _float_text(round(float(latency_ms), 3))
    return (
        f"{_series_head(exchange, symbol, timeframe)},"
        f'"bar_open_ms":{int(bar_open_ms)!r},"bar_close_ms":{int(bar_close_ms)!r},'
        f"{_model_part(model, model_version, target, horizon_bars, quantile)},"
        f'"value":{value_text},"published_ms":{int(published_ms)!r},"latency_ms":{latency_text}}}'
    )


def _float_text(number: float) -> str:
    if not math.isfinite(number):
        raise ValueError(f"Out of range float values are not JSON compliant: {number!r}")
    return float.__repr__(number)


@functools.lru_cache(maxsize=65_536)
def _series_head(exchange: str, symbol: str, timeframe: str) -> str:
    fields = {"schema": SCHEMA_ID, "exchange": exchange, "symbol": symbol, "timeframe": timeframe}
    return json.dumps(fields, separators=(",", ":"))[:-1]  # without the closing brace


@functools.lru_cache(maxsize=1024)
def _model_part(
    model: str, model_version: str, target: str, horizon_bars: int | None, quantile: float | None
) -> str:
    fields: dict[str, object] = {"model": model, "model_version": model_version, "target": target}
    if horizon_bars is not None:
        fields["horizon_bars"] = int(horizon_bars)
    if quantile is not None:
        fields["quantile"] = float(quantile)
    return json.dumps(fields, separators=(",", ":"), allow_nan=False)[1:-1]
