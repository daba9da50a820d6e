"""Helpers for tests that drive the exchange simulator with real clients."""

from __future__ import annotations

import csv
import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import ccxt.pro

from streamer.simulator import Simulator, SimulatorConfig

DATA = Path(__file__).resolve().parents[1] / "streamer" / "data"


class RecordingBinance(ccxt.pro.binance):  # type: ignore[misc]
    """The real ccxt client, also keeping every raw kline event (ccxt drops Binance's x flag)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.raw_klines: list[dict[str, Any]] = []

    def handle_ohlcv(self, client: Any, message: dict[str, Any]) -> None:
        self.raw_klines.append(message)
        super().handle_ohlcv(client, message)

    def closed_events(self) -> list[tuple[str, int]]:
        return [(m["s"], m["k"]["t"]) for m in self.raw_klines if m["k"]["x"] is True]


def binance_client(sim: Simulator, **options: Any) -> RecordingBinance:
    """``ccxt.pro.binance`` pointed at the simulator, as the feed configures it."""
    client = RecordingBinance(
        {
            "enableRateLimit": False,
            "options": {"fetchMarkets": {"types": ["spot"]}, **options},
        }
    )
    client.urls["api"]["public"] = sim.rest_url
    client.urls["api"]["ws"]["spot"] = sim.ws_url
    return client


def csv_rows(name: str) -> list[list[float]]:
    """Rows of a shipped candle CSV as ``[open_ms, o, h, l, c, v]`` (read independently)."""
    with gzip.open(DATA / name, "rt", newline="") as handle:
        return [
            [
                int(r["timestamp_ms"]),
                *(float(r[k]) for k in ("open", "high", "low", "close", "volume")),
            ]
            for r in csv.DictReader(handle)
        ]


@asynccontextmanager
async def synthetic_simulator(symbols: int) -> AsyncIterator[Simulator]:
    """``symbols`` synthetic series, 120 bars of history, stepped by the test, no whale feed."""
    config = SimulatorConfig(
        synthetic=symbols, synthetic_bars=200, history_bars=120, bar_seconds=None, whale=False
    )
    async with Simulator(config) as simulator:
        yield simulator
