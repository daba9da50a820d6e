"""Filling the mirror from Redis, and writing it back where Redis lost or outdated it.

A series stored under another feature version (or window length) is rebuilt
from its bars and rewritten. When Redis has nothing for a series the mirror
holds (Redis restarted without persistence, or was flushed), the mirror is
written back instead of being emptied (``whalecast_store_restored_series_total``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamer.features import FEATURE_VERSION
from streamer.mirror import EMPTY, merged_grid, window_rows
from streamer.store_format import WINDOW_LAYOUT, BarRecord, unpack_bars, unpack_window
from streamer.store_plan import bar_matrix
from streamer.store_script import SCRIPT, StoreScript
from whalecast.domain import Series
from whalecast.logs import get_logger
from whalecast.redis_ports import array, blob, strings

log = get_logger(__name__)
VERSION_TEXT = str(FEATURE_VERSION).encode()


async def load_all(script: StoreScript) -> None:
    """Fill the mirror from Redis; rebuild windows stored under another feature version."""
    with script.timed("load"):
        await script.redis.script_load(SCRIPT)
        await load(script, range(len(script.mirror.series)))


async def load(script: StoreScript, positions: Sequence[int]) -> None:
    """Read these series back from Redis into the mirror, in one pipeline."""
    mirror = script.mirror
    pipe = script.redis.pipeline(transaction=False)
    for p in positions:
        bars_key, window_key, meta_key = script.keys[p]
        pipe.hmget(meta_key, ["last_open_ms", "feature_version", "window_rows", "window_layout"])
        pipe.zrange(bars_key, 0, -1)
        pipe.get(window_key)
    replies = await pipe.execute()
    rows_text = str(mirror.window).encode()
    stale, lost = [], []
    for j, p in enumerate(positions):
        meta, stored, window = replies[3 * j : 3 * j + 3]
        last, version, rows_meta, layout = strings(array(meta))
        members = [m for m in strings(array(stored)) if m is not None]
        if last is None or not members:
            if mirror.last[p] == EMPTY:
                mirror.clear(p)
            else:
                lost.append(p)  # Redis lost what it had confirmed: keep the mirror
            continue
        grid = merged_grid(unpack_bars(members), mirror.series[p].timeframe, mirror.bars_kept)
        current = (version, rows_meta, layout) == (VERSION_TEXT, rows_text, WINDOW_LAYOUT)
        rows = unpack_window(blob(window), mirror.window) if current else None
        if rows is None:
            stale.append(p)
            rows = window_rows(grid, mirror.window)
        mirror.reset(p, grid, rows, int(last))
    await script.replace(stale)
    await _restore(script, lost)


async def _restore(script: StoreScript, positions: Sequence[int]) -> None:
    """Rewrite series whose keys Redis no longer has from the mirror.

    The mirror holds only what the store script confirmed, and this process is
    the only writer of its series, so an empty series next to a filled mirror
    means Redis lost its data (a restart without persistence, a flush): the
    windows come back at once instead of after a full warm-up without predictions.
    """
    if not positions:
        return
    await script.replace(positions)
    if script.metrics is not None:
        script.metrics.store_restored.inc(len(positions))
    log.warning(
        "redis had lost these series; rewritten from memory",
        series=len(positions), first=script.mirror.series[positions[0]].tag,
    )  # fmt: skip


async def warm_up(script: StoreScript, series: Series, records: Sequence[BarRecord]) -> None:
    """Merge backfilled bars into the stored ones and recompute the window
    (:meth:`streamer.store.WindowStore.warm_up`)."""
    mirror = script.mirror
    position = int(mirror.positions([series])[0])
    new = bar_matrix(records, series)
    with script.timed("warm_up"):
        await load(script, [position])
        present = mirror.present_bars(position)
        if not len(new) and not len(present):
            return
        grid = merged_grid(np.concatenate([present, new]), series.timeframe, mirror.bars_kept)
        rows = window_rows(grid, mirror.window)
        last = int(grid[-1, 0])
        same_bars = np.array_equal(grid[:, 1:], mirror.bars[position, :, 1:], True)
        if same_bars and last == mirror.last[position]:
            return
        mirror.reset(position, grid, rows, last)
        await script.replace([position])
