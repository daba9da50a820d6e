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

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_ID = "whalecast.prediction/v1"

#: Targets a model may declare, and what ``value`` then means.
TARGETS = {
    "p_up_next_bar": "probability that the next bar closes above this bar's close",
    "next_bar_volume": "predicted volume of the next bar, in base-asset units",
}


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
    target: Literal["p_up_next_bar", "next_bar_volume"]
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
    """Fast path for the publisher: plain ``json.dumps`` with the schema's key order."""
    return json.dumps(
        {
            "schema": SCHEMA_ID,
            "exchange": exchange,
            "symbol": symbol,
            "timeframe": timeframe,
            "bar_open_ms": bar_open_ms,
            "bar_close_ms": bar_close_ms,
            "model": model,
            "model_version": model_version,
            "target": target,
            "value": round(float(value), 8),
            "published_ms": published_ms,
            "latency_ms": round(float(latency_ms), 3),
        },
        separators=(",", ":"),
        allow_nan=False,
    )
