"""Fuzz targets: each takes raw bytes and raises only when a property is broken.

- ``candles``: bytes → (JSON or provider-built) kline row → ``candle_from_row`` and the
  feed's validator: a candle is accepted clean, or exactly one rejection is counted.
- ``whale``: bytes → one Whale Alert websocket message → ``WhaleFeed.handle``: never
  raises; the message is used, or counted as rejected, or is a control message.
- ``config``: bytes → a config file → ``load_settings``: settings whose floats are all
  finite, or ``ConfigError``; nothing else.

The same functions run under atheris (``python -m fuzz.run``) and in the test suite.
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamer.validation import CandleValidator, candle_from_row
from streamer.whale import WhaleFeed
from whalecast.domain import Series, WhaleTransfer
from whalecast.metrics import REJECT_REASONS, Metrics
from whalecast.settings import ConfigError, FeedSettings, WhaleSettings, load_settings

NOW_MS = 1_767_225_600_000
SERIES = Series("binance", "BTC/USDT", "1h")


class FakeClock:
    """A fixed exchange time, so "too old" and "from the future" are reproducible."""

    def now_ms(self) -> int:
        return NOW_MS

    def slack_ms(self) -> int:
        return 0

    def observe(self, server_ms: int) -> None:
        return None


def rejected_total(metrics: Metrics, feed: str) -> float:
    """Rejections counted so far on ``feed`` (read from the counters themselves: fast)."""
    return sum(metrics.feed_rejected.labels(feed, r)._value.get() for r in REJECT_REASONS)


def _row(data: bytes) -> Any:
    """JSON when the bytes are JSON; else six fields cut from the bytes (numbers or text)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        pass
    fields: list[Any] = [
        int.from_bytes(data[:8].ljust(8, b"\0"), "little") // 3_600_000 * 3_600_000
    ]
    for i in range(5):
        chunk = data[8 + 6 * i : 14 + 6 * i]
        fields.append(chunk.decode("latin-1") if i % 2 else int.from_bytes(chunk, "little") / 1e4)
    return fields


_CANDLE_METRICS = Metrics(process=False)
_VALIDATOR = CandleValidator(FeedSettings(), FakeClock(), _CANDLE_METRICS)


def candles(data: bytes) -> None:
    row = _row(data)
    before = rejected_total(_CANDLE_METRICS, "candles")
    candle = candle_from_row(SERIES, row, closed=True) if isinstance(row, list) else None
    accepted = _VALIDATOR.accept(candle)
    counted = rejected_total(_CANDLE_METRICS, "candles") - before
    if accepted:
        assert candle is not None and counted == 0
        assert candle.problem() is None and math.isfinite(candle.volume * candle.close)
    else:
        assert counted == 1, (row, counted)


class _Whale:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.metrics = Metrics(process=False)
        self.delivered = 0
        self.feed = WhaleFeed(
            WhaleSettings(), FeedSettings(), self.metrics, self._on_transfers, clock=FakeClock()
        )

    async def _on_transfers(self, transfers: list[WhaleTransfer]) -> None:
        for transfer in transfers:
            assert math.isfinite(transfer.usd) and transfer.usd >= 0
        self.delivered += len(transfers)

    def handle(self, data: bytes) -> None:
        before = (rejected_total(self.metrics, "whale"), self.delivered)
        self.loop.run_until_complete(self.feed.handle(data))
        counted = rejected_total(self.metrics, "whale") - before[0]
        delivered = self.delivered - before[1]
        assert counted in (0, 1) and not (counted and delivered)
        assert len(self.feed._seen) <= 10_000


_WHALE: _Whale | None = None


def whale(data: bytes) -> None:
    global _WHALE  # noqa: PLW0603 - one feed and event loop for the whole fuzz run
    if _WHALE is None:
        _WHALE = _Whale()
    _WHALE.handle(data)


_CONFIG_DIR = Path(tempfile.mkdtemp(prefix="wc-fuzz-config-"))


def config(data: bytes) -> None:
    path = _CONFIG_DIR / "config.yml"
    path.write_bytes(data)
    try:
        settings = load_settings(path)
    except ConfigError as e:
        assert str(e).strip()
        return
    for section in settings.model_dump().values():
        for value in section.values() if isinstance(section, dict) else [section]:
            assert not (isinstance(value, float) and not math.isfinite(value))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "candles": candles,
    "whale": whale,
    "config": config,
}
