"""The Redis window store: per series, recent bars, the newest feature rows, and meta.

The keys and their bytes are in :mod:`streamer.store_format`. Bars are trimmed by
open time in every write and all three keys get a TTL: the window's is renewed by
every write, the bars' and meta's by the first write, after a gap and whenever a
bar's open time enters a new quarter of the TTL (two calls fewer per series and
bar; see ``store.lua``).

Every write goes through ``store.lua``: an append of a bar not newer than the
stored last one is a no-op; a bar past ``last + bar`` is a gap, reported and
not written unless the caller passes ``allow_gap`` (after backfill proved the
bars do not exist: the missing bars then become NaN rows, see
``streamer.features``). An append is two phases: :meth:`WindowStore.plan` works
it out against the in-memory mirror (:mod:`streamer.mirror`; the feature row of
the new bar is computed there, in Python, see :mod:`streamer.store_plan`), and
:meth:`WindowStore.commit` sends it, all series' bars for one bar in as few
script calls as a server allows (:mod:`streamer.store_script`), moving the
mirror only once Redis confirmed (:mod:`streamer.store_commit`). All windows are
read in one round trip (one MGET; on a Cluster one per node). Loading, and
writing back what Redis lost, is :mod:`streamer.store_load`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamer import store_commit, store_load
from streamer.features import FEATURE_NAMES, HISTORY_BARS
from streamer.mirror import EMPTY, BoolArray, Float32Array, IntArray, Mirror, ready
from streamer.store_format import DEFAULT_TTL_SECONDS, AppendResult, BarRecord, unpack_window
from streamer.store_plan import AppendPlan, plan_append
from streamer.store_script import STORE_OPERATIONS, StoreScript
from whalecast.domain import Candle, Series
from whalecast.keys import Keys
from whalecast.metrics import Metrics
from whalecast.redis_ports import RedisClient
from whalecast.redisconn import mget


class WindowStore:
    """Rolling feature windows of a set of series in Redis, mirrored in memory."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        series: Sequence[Series],
        window: int = 24,
        metrics: Metrics | None = None,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.window = window
        self.metrics = metrics
        self.bars_kept = HISTORY_BARS + window
        if metrics is not None:  # every family shows from the first scrape
            for operation in STORE_OPERATIONS:
                metrics.redis_errors.labels(operation)
            for exchange, timeframe in {(s.exchange, s.timeframe) for s in series}:
                metrics.gaps.labels(exchange, timeframe)
        self.mirror = Mirror(series, window, self.bars_kept)
        self._script = StoreScript(redis, keys, self.mirror, metrics, ttl_seconds)

    @property
    def series(self) -> tuple[Series, ...]:
        return self.mirror.series

    # ---------------------------------------------------------------- reading

    def last_open_ms(self, series: Series) -> int | None:
        last = int(self.mirror.last[self.mirror.positions([series])[0]])
        return None if last == EMPTY else last

    def last_open_times(self, series: Sequence[Series]) -> IntArray:
        """:meth:`last_open_ms` of many series at once (-1 for a series with no bar)."""
        last: IntArray = self.mirror.last[self.mirror.positions(series)]
        return last

    def not_stored(self, series: Sequence[Series], open_ms: int) -> list[Series]:
        """The series whose newest stored bar opens before ``open_ms`` (that bar may still come)."""
        last = self.mirror.last[self.mirror.positions(series)]
        return [s for s, behind in zip(series, last < open_ms, strict=True) if behind]

    def last_candle(self, series: Series) -> Candle | None:
        """The series' newest stored bar as a closed candle (None for an empty series)."""
        position = int(self.mirror.positions([series])[0])
        bars = self.mirror.present_bars(position)
        if not len(bars) or int(bars[-1, 0]) != self.mirror.last[position]:
            return None
        open_ms, o, h, low, c, v = (float(x) for x in bars[-1, :6])
        return Candle(series.exchange, series.symbol, series.timeframe, int(open_ms),
                      o, h, low, c, v, closed=True)  # fmt: skip

    def windows(self, series: Sequence[Series]) -> tuple[Float32Array, BoolArray]:
        """``(n, window, F)`` float32 from the mirror, and the ready mask (no NaN anywhere).

        A window belongs to its series' last appended bar (:meth:`last_open_ms`):
        a series that has not closed the current bar yet still shows the previous one.
        """
        with self._script.timed("windows"):
            rows, ready = self.mirror.windows(self.mirror.positions(series))
        return rows, ready

    async def read_windows(self, series: Sequence[Series]) -> tuple[Float32Array, BoolArray]:
        """The same from Redis, in one round trip (rows of another layout: not ready)."""
        positions = self.mirror.positions(series)
        keys = [self._script.keys[p][1] for p in positions]
        with self._script.timed("read"):
            blobs = await mget(self.redis, keys)  # on a Cluster: one request per node
        rows = np.full((len(positions), self.window, len(FEATURE_NAMES)), np.nan, np.float32)
        for j, blob in enumerate(blobs):
            stored = unpack_window(blob, self.window)
            if stored is not None:
                rows[j] = stored
        return rows, ready(rows)

    # ---------------------------------------------------------------- loading

    async def load(self) -> None:
        """Fill the mirror from Redis; rebuild windows stored under another feature version."""
        await store_load.load_all(self._script)

    async def warm_up(self, series: Series, records: Sequence[BarRecord]) -> None:
        """Merge backfilled bars into the stored ones and recompute the window.

        The series' stored state is read back from Redis first. Bars already
        stored win over records with the same open time (closed bars do not
        change). Grid positions between the bars that neither the store nor
        ``records`` hold are missing bars (NaN rows): pass every bar the
        exchange has for the span. Writes nothing when nothing changes.
        """
        await store_load.warm_up(self._script, series, records)

    # ---------------------------------------------------------------- appending

    def plan(self, records: Sequence[BarRecord], allow_gap: bool = False) -> AppendPlan:
        """Work out an append against the mirror without sending it (:meth:`commit` does).

        The plan says which series its first round appends (:attr:`AppendPlan.series`)
        and their windows as they will be once Redis confirms it
        (:meth:`AppendPlan.windows`): the bar loop starts the forward pass on them while
        the commit is in flight. It is a forecast: the mirror only changes after Redis
        confirmed, and a round Redis answers otherwise is reloaded and tried again.
        """
        return plan_append(self.mirror, records, allow_gap)

    async def commit(self, plan: AppendPlan) -> list[AppendResult]:
        """Send a plan, one pipeline per round (a round = at most one bar per series)."""
        return await store_commit.commit(self._script, plan)

    async def append(
        self, records: Sequence[BarRecord], allow_gap: bool = False
    ) -> list[AppendResult]:
        """Append closed bars: :meth:`plan` and :meth:`commit` in one."""
        return await self.commit(self.plan(records, allow_gap))
