"""What the window store keeps in Redis, byte for byte, and the records it appends.

Per series (``whalecast.keys.Keys``, one Cluster slot per series): ``...:bars`` a
sorted set of the last ``HISTORY_BARS + window`` grid positions' bars (score =
open time, member = 10 little-endian float64 in ``BAR_COLUMNS`` order),
``...:window`` an 8-byte header (``WINDOW_HEADER``: magic ``WCFW``, feature-list
version and feature count as little-endian uint16) followed by the newest
``window`` feature rows as little-endian float32, oldest first (fewer until
that many bars were appended), so every window says which feature list
wrote it and a reader never mixes versions; ``...:meta`` a hash
(``last_open_ms``, ``feature_version``, ``window_rows``, counters ``appended``,
``gap_bars``, ``replaced``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from streamer.features import BAR_COLUMNS, FEATURE_NAMES, FEATURE_VERSION
from streamer.mirror import Float32Array, FloatArray
from whalecast.domain import Candle, Series, WhaleBar

Status = Literal["appended", "duplicate", "gap"]
BAR_DTYPE: Final = np.dtype("<f8")
ROW_DTYPE: Final = np.dtype("<f4")
DEFAULT_TTL_SECONDS: Final = 7 * 86_400.0
#: First 8 bytes of every stored window: magic, feature-list version, feature count.
WINDOW_HEADER: Final = struct.pack("<4sHH", b"WCFW", FEATURE_VERSION, len(FEATURE_NAMES))
_ROW_BYTES: Final = len(FEATURE_NAMES) * ROW_DTYPE.itemsize


@dataclass(frozen=True)
class BarRecord:
    """One closed bar of one series with its whale aggregates: what the store appends."""

    candle: Candle
    whale: WhaleBar

    @property
    def series(self) -> Series:
        return self.candle.series

    def values(self) -> tuple[float, ...]:
        """The record in ``BAR_COLUMNS`` order."""
        c, w = self.candle, self.whale
        return (float(c.open_ms), c.open, c.high, c.low, c.close, c.volume,
                w.inflow_usd, w.outflow_usd, float(w.count), w.stable_inflow_usd)  # fmt: skip


@dataclass(frozen=True)
class AppendResult:
    series: Series
    open_ms: int
    status: Status
    expected_open_ms: int | None = None  # for "gap": the bar that should have come next


def key_ttl_ms(series: Series, ttl_seconds: float) -> int:
    """TTL of a series' keys: ``ttl_seconds``, and never under four bars."""
    return int(max(ttl_seconds * 1000, 4 * series.bar_ms))


def pack_bars(bars: FloatArray) -> list[bytes]:
    return [row.tobytes() for row in np.ascontiguousarray(bars, dtype=BAR_DTYPE)]


def unpack_bars(members: Sequence[bytes]) -> FloatArray:
    packed = b"".join(members)
    return np.frombuffer(packed, dtype=BAR_DTYPE).reshape(-1, len(BAR_COLUMNS)).astype(np.float64)


def pack_window(rows: Float32Array) -> bytes:
    return WINDOW_HEADER + np.ascontiguousarray(rows, dtype=ROW_DTYPE).tobytes()


def unpack_window(blob: bytes | None, window: int) -> Float32Array | None:
    """Stored rows, NaN-padded at the front to ``window`` rows.

    None when the blob was written for another layout (feature-list version or
    feature count), or holds more rows than ``window``.
    """
    if blob is None or not blob.startswith(WINDOW_HEADER):
        return None
    body = memoryview(blob)[len(WINDOW_HEADER) :]
    if len(body) % _ROW_BYTES or len(body) > window * _ROW_BYTES:
        return None
    out = np.full((window, len(FEATURE_NAMES)), np.nan, dtype=np.float32)
    rows = np.frombuffer(body, dtype=ROW_DTYPE).reshape(-1, len(FEATURE_NAMES))
    if len(rows):
        out[-len(rows) :] = rows
    return out
