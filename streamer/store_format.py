"""What the window store keeps in Redis, byte for byte, and the records it appends.

Per series (``whalecast.keys.Keys``, one Cluster slot per series): ``...:bars`` a
sorted set of the last ``HISTORY_BARS + window`` grid positions' bars (score =
open time, member = 10 little-endian float64 in ``BAR_COLUMNS`` order),
``...:window`` a ring of ``window`` feature rows (little-endian float32) behind a
12-byte header: ``WINDOW_HEADER`` (magic ``WCFR``, feature-list version and
feature count as little-endian uint16), then the slot of the newest row as a
little-endian uint32. The bar opening at ``t`` sits in slot ``t // bar_ms %
window``, so the store overwrites one row per bar in place instead of rewriting
the window; slots no bar has filled yet (a new series, missing bars) are NaN.
Every window says which feature list wrote it, so a reader never mixes
versions. ``...:meta`` a hash (``last_open_ms``, ``feature_version``,
``window_rows``, ``window_layout``, counters ``appended``, ``gap_bars``,
``replaced``).
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
WINDOW_HEADER: Final = struct.pack("<4sHH", b"WCFR", FEATURE_VERSION, len(FEATURE_NAMES))
_SLOT: Final = struct.Struct("<I")  # the newest row's slot, after WINDOW_HEADER
HEADER_BYTES: Final = len(WINDOW_HEADER) + _SLOT.size
#: meta's ``window_layout`` (``store.lua`` LAYOUT): windows stored otherwise are rebuilt.
WINDOW_LAYOUT: Final = b"ring1"
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


def ring_slot(open_ms: int, bar_ms: int, window: int) -> int:
    """The ring slot of the bar opening at ``open_ms`` (``store.lua`` computes the same)."""
    return open_ms // bar_ms % window


def pack_window(rows: Float32Array, newest_slot: int) -> bytes:
    """The stored ring of ``rows`` (oldest first), the newest in ``newest_slot``."""
    ring = np.roll(np.ascontiguousarray(rows, dtype=ROW_DTYPE), newest_slot + 1, axis=0)
    return WINDOW_HEADER + _SLOT.pack(newest_slot) + ring.tobytes()


def unpack_window(blob: bytes | None, window: int) -> Float32Array | None:
    """The stored rows, oldest first.

    None when the blob was written for another layout (feature-list version,
    feature count, an older window layout) or another window length.
    """
    if blob is None or not blob.startswith(WINDOW_HEADER):
        return None
    if len(blob) != HEADER_BYTES + window * _ROW_BYTES:
        return None
    (newest,) = _SLOT.unpack_from(blob, len(WINDOW_HEADER))
    if newest >= window:
        return None
    ring = np.frombuffer(blob, dtype=ROW_DTYPE, offset=HEADER_BYTES)
    ring = ring.reshape(window, len(FEATURE_NAMES))
    return np.concatenate((ring[newest + 1 :], ring[: newest + 1]))  # a copy: writable
