"""The window store's calls to ``store.lua``: per-series keys and parameters, batching.

All series' appends for one bar go in ONE script call on a plain server (the
script loops over the series, each handled on its own; at most
``MAX_SERIES_PER_CALL`` per call, more calls share one pipeline), and in one call
per hash slot on a Cluster (a script's keys must share a slot), all in one
pipeline. Every call is timed per ``operation`` and a Redis error counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Final

import numpy as np
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from streamer.features import FEATURE_VERSION
from streamer.mirror import EMPTY, FloatArray, IntArray, Mirror
from streamer.store_format import (
    BAR_DTYPE,
    WINDOW_HEADER,
    key_ttl_ms,
    pack_bars,
    pack_window,
    ring_slot,
)
from whalecast.keys import Keys
from whalecast.metrics import Metrics
from whalecast.redis_ports import RedisClient, RedisPipeline, Reply
from whalecast.redisconn import run_script_pipeline

SCRIPT: Final = resources.files("streamer").joinpath("store.lua").read_text()
#: ``operation`` label values of the store's timings and Redis errors.
STORE_OPERATIONS: Final = ("windows", "read", "load", "warm_up", "append")
#: Series per append script call (bounds how long one call blocks the server).
MAX_SERIES_PER_CALL: Final = 1000


class StoreScript:
    """Queues ``store.lua`` calls for the mirror's series and runs them in one pipeline."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        mirror: Mirror,
        metrics: Metrics | None,
        ttl_seconds: float,
    ) -> None:
        self.redis = redis
        self.mirror = mirror
        self.metrics = metrics
        window, series = mirror.window, mirror.series
        self.sha = redis.register_script(SCRIPT).sha
        self.keys = [(keys.bars(s), keys.window(s), keys.meta(s)) for s in series]
        self._key_bytes = [tuple(k.encode() for k in three) for three in self.keys]
        self._ttl_ms = [key_ttl_ms(s, ttl_seconds) for s in series]
        self._params = [
            [
                f"{s.bar_ms} {FEATURE_VERSION} {window} {mirror.bars_kept} {ttl} {gap}".encode()
                for gap in (0, 1)
            ]
            for s, ttl in zip(series, self._ttl_ms, strict=True)
        ]
        # the hash slot of each series on a Cluster (its three keys share it); None: one server
        self._slots = (
            [key_slot(three[0]) for three in self._key_bytes]
            if isinstance(redis, RedisCluster)
            else None
        )

    async def execute(self, queue: Callable[[RedisPipeline], object]) -> list[Reply]:
        return await run_script_pipeline(self.redis, SCRIPT, queue)

    async def replace(self, positions: Sequence[int]) -> None:
        """Write the mirror's state of these series over the stored one, one pipeline."""
        if positions:

            def queue(pipe: RedisPipeline) -> None:
                for p in positions:
                    self._queue_replace(pipe, p)

            await self.execute(queue)

    def _queue_replace(self, pipe: RedisPipeline, p: int) -> None:
        bars = self.mirror.present_bars(p)
        pairs: list[bytes | int] = []
        for open_ms, member in zip(bars[:, 0].astype(np.int64), pack_bars(bars), strict=True):
            pairs += [int(open_ms), member]
        last, window = int(self.mirror.last[p]), self.mirror.window
        newest = (
            window - 1 if last == EMPTY else ring_slot(last, self.mirror.series[p].bar_ms, window)
        )
        args = ("replace", last, FEATURE_VERSION, window,
                pack_window(self.mirror.rows[p], newest), self._ttl_ms[p], *pairs)  # fmt: skip
        pipe.execute_command("EVALSHA", self.sha, 3, *self.keys[p], *args)

    def call_groups(self, positions: IntArray) -> list[list[int]]:
        """Indices into ``positions`` per script call: all series, or one slot's on a Cluster."""
        if self._slots is None:
            whole = [list(range(len(positions)))]
        else:
            by_slot: dict[int, list[int]] = {}
            for j, p in enumerate(positions):
                by_slot.setdefault(self._slots[p], []).append(j)
            whole = list(by_slot.values())
        step = MAX_SERIES_PER_CALL
        return [g[i : i + step] for g in whole for i in range(0, len(g), step)]

    def queue_append(
        self,
        pipe: RedisPipeline,
        group: list[int],
        positions: IntArray,
        bars: FloatArray,
        rows: list[bytes],
        *,
        allow_gap: bool,
    ) -> None:
        """One script call appending ``bars[j]`` (feature row ``rows[j]``) for each j of group."""
        keys: list[bytes] = []
        args: list[bytes | int | str] = ["append", WINDOW_HEADER]
        packed = np.ascontiguousarray(bars, dtype=BAR_DTYPE)
        for j in group:
            p = int(positions[j])
            last = int(self.mirror.last[p])
            keys.extend(self._key_bytes[p])
            args += [int(bars[j, 0]), "" if last == EMPTY else last, packed[j].tobytes(), rows[j],
                     self._params[p][allow_gap]]  # fmt: skip
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    @contextmanager
    def timed(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except RedisError:
            if self.metrics is not None:
                self.metrics.redis_errors.labels(operation).inc()
            raise
        if self.metrics is not None:
            self.metrics.store_seconds.labels(operation).observe(time.perf_counter() - start)
