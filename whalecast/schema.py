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
) -> str:
    """The message, byte for byte what ``json.dumps`` with the schema's key order and
    ``separators=(",", ":")`` gives (ValueError for a non-finite number).

    Fast path for the publisher (thousands per bar): the string fields of a series
    and of a model version are encoded once and cached; numbers are formatted as
    ``json`` formats them (``int.__repr__``, ``float.__repr__``).
    """
    value_text = _float_text(round(float(value), 8))
    latency_text = _float_text(round(float(latency_ms), 3))
    return (
        f"{_series_head(exchange, symbol, timeframe)},"
        f'"bar_open_ms":{int(bar_open_ms)!r},"bar_close_ms":{int(bar_close_ms)!r},'
        f"{_model_part(model, model_version, target)},"
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
def _model_part(model: str, model_version: str, target: str) -> str:
    fields = {"model": model, "model_version": model_version, "target": target}
    return json.dumps(fields, separators=(",", ":"))[1:-1]
