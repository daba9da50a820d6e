"""The Redis window store: per series, recent bars, the newest feature rows, and meta.

Keys (``whalecast.keys.Keys``, one Cluster slot per series): ``...:bars`` a
sorted set of the last ``HISTORY_BARS + window`` grid positions' bars (score =
open time, member = 10 little-endian float64 in ``BAR_COLUMNS`` order),
``...:window`` an 8-byte header (``WINDOW_HEADER``: magic ``WCFW``, feature-list
version and feature count as little-endian uint16) followed by the newest
``window`` feature rows as little-endian float32, oldest first (fewer until
that many bars were appended), so every window says which feature list
wrote it and a reader never mixes versions; ``...:meta`` a hash
(``last_open_ms``, ``feature_version``, ``window_rows``, counters ``appended``,
``gap_bars``, ``replaced``). Bars are trimmed by open time in every write and
all three keys get a TTL: the window's is renewed by every write, the bars' and
meta's by the first write, after a gap and whenever a bar's open time enters a new
quarter of the TTL (two calls fewer per series and bar; see ``store.lua``).

Every write goes through ``store.lua``: an append of a bar not newer than the
stored last one is a no-op; a bar past ``last + bar`` is a gap, reported and
not written unless the caller passes ``allow_gap`` (after backfill proved the
bars do not exist: the missing bars then become NaN rows, see
``streamer.features``). All series' appends for one bar go in ONE script call
on a plain server (the script loops over the series, each handled on its own;
at most ``MAX_SERIES_PER_CALL`` per call, more calls share one pipeline), and
in one call per hash slot on a Cluster (a script's keys must share a slot),
all in one pipeline. All windows are read in one round trip (one MGET; on a
Cluster one per node). The feature row of the new bar is computed in Python from the in-memory
mirror (:mod:`streamer.mirror`) and written with the bar in the same script
call; the script checks that the mirror's view (last open time, feature
version, window length) is the stored one, and the store reloads and retries
when it is not, so Redis stays authoritative. One exception: when Redis has
nothing for a series the mirror holds (Redis restarted without persistence, or
was flushed), the mirror is written back instead of being emptied
(``whalecast_store_restored_series_total``).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Literal, cast

import numpy as np
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from streamer.features import BAR_COLUMNS, FEATURE_NAMES, FEATURE_VERSION, HISTORY_BARS
from streamer.mirror import (
    EMPTY,
    Advance,
    BoolArray,
    Float32Array,
    FloatArray,
    IntArray,
    Mirror,
    merged_grid,
    ready,
    window_rows,
)
from whalecast.domain import Candle, Series, WhaleBar
from whalecast.keys import Keys
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.redisconn import mget, run_script_pipeline

log = get_logger(__name__)

Status = Literal["appended", "duplicate", "gap"]
BAR_DTYPE: Final = np.dtype("<f8")
ROW_DTYPE: Final = np.dtype("<f4")
DEFAULT_TTL_SECONDS: Final = 7 * 86_400.0
#: ``operation`` label values of the store's timings and Redis errors.
STORE_OPERATIONS: Final = ("windows", "read", "load", "warm_up", "append")
SCRIPT: Final = resources.files("streamer").joinpath("store.lua").read_text()
#: First 8 bytes of every stored window: magic, feature-list version, feature count.
WINDOW_HEADER: Final = struct.pack("<4sHH", b"WCFW", FEATURE_VERSION, len(FEATURE_NAMES))
_ROW_BYTES: Final = len(FEATURE_NAMES) * ROW_DTYPE.itemsize
#: Series per append script call (bounds how long one call blocks the server).
MAX_SERIES_PER_CALL: Final = 1000


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


@dataclass(frozen=True)
class _Round:
    """One round of an append worked out against the mirror: what to send, what Redis
    should answer (``expected``) and the mirror's move once it did (``advance``)."""

    records: tuple[BarRecord, ...]
    positions: IntArray
    new: FloatArray
    expected: list[str]
    appending: BoolArray
    advance: Advance
    rows: list[bytes]


class AppendPlan:
    """An append worked out, not sent: :meth:`WindowStore.plan`, then :meth:`WindowStore.commit`."""

    def __init__(
        self,
        records: tuple[BarRecord, ...],
        allow_gap: bool,
        rounds: list[list[int]],
        first: _Round | None,
        mirror: Mirror,
    ) -> None:
        self.records = records
        self.allow_gap = allow_gap
        self.rounds = rounds
        self.first = first
        self._mirror = mirror
        self._generation = mirror.generation

    @property
    def current(self) -> bool:
        """The mirror is as it was planned against (nothing committed or reloaded since)."""
        return self._mirror.generation == self._generation

    @property
    def series(self) -> list[Series]:
        """The series the first round appends (a bar newer than their stored last)."""
        if self.first is None:
            return []
        return [self.first.records[j].series for j in np.flatnonzero(self.first.appending)]

    def windows(self) -> Float32Array:
        """The windows of :attr:`series` as committing the plan will leave them."""
        if not self.current:
            raise RuntimeError("the plan is stale: the mirror changed after it was made")
        if self.first is None:
            return self._mirror.rows[:0].copy()
        return self._mirror.preview(self.first.advance)


class StoreConflict(RuntimeError):
    """Redis kept disagreeing with this process's view of a series (another writer?)."""


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


def _rounds(records: Sequence[BarRecord]) -> list[list[int]]:
    """Record positions split so each round holds at most one bar per series, in order."""
    rounds: list[list[int]] = []
    seen: dict[Series, int] = {}
    for position, record in enumerate(records):
        depth = seen.get(record.series, 0)
        seen[record.series] = depth + 1
        if depth == len(rounds):
            rounds.append([])
        rounds[depth].append(position)
    return rounds


class WindowStore:
    """Rolling feature windows of a set of series in Redis, mirrored in memory."""

    def __init__(
        self,
        redis: Any,
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
        self._sha = redis.register_script(SCRIPT).sha
        self._rows_text = str(window).encode()
        self._keys = [(keys.bars(s), keys.window(s), keys.meta(s)) for s in self.mirror.series]
        self._key_bytes = [tuple(k.encode() for k in three) for three in self._keys]
        self._ttl_ms = [key_ttl_ms(s, ttl_seconds) for s in self.mirror.series]
        self._params = [
            [
                f"{s.bar_ms} {FEATURE_VERSION} {window} {self.bars_kept} {ttl} {gap}".encode()
                for gap in (0, 1)
            ]
            for s, ttl in zip(self.mirror.series, self._ttl_ms, strict=True)
        ]
        # the hash slot of each series on a Cluster (its three keys share it); None: one server
        self._slots = (
            [key_slot(three[0]) for three in self._key_bytes]
            if isinstance(redis, RedisCluster)
            else None
        )

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
        with self._timed("windows"):
            rows, ready = self.mirror.windows(self.mirror.positions(series))
        return rows, ready

    async def read_windows(self, series: Sequence[Series]) -> tuple[Float32Array, BoolArray]:
        """The same from Redis, in one round trip (rows of another layout: not ready)."""
        positions = self.mirror.positions(series)
        keys = [self._keys[p][1] for p in positions]
        with self._timed("read"):
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
        with self._timed("load"):
            await self.redis.script_load(SCRIPT)
            await self._load(range(len(self.series)))

    async def _load(self, positions: Sequence[int]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for p in positions:
            bars_key, window_key, meta_key = self._keys[p]
            pipe.hmget(meta_key, "last_open_ms", "feature_version", "window_rows")
            pipe.zrange(bars_key, 0, -1)
            pipe.get(window_key)
        replies = await pipe.execute()
        stale, lost = [], []
        for j, p in enumerate(positions):
            (last, version, rows_meta), members, blob = replies[3 * j : 3 * j + 3]
            if last is None or not members:
                if self.mirror.last[p] == EMPTY:
                    self.mirror.clear(p)
                else:
                    lost.append(p)  # Redis lost what it had confirmed: keep the mirror
                continue
            grid = merged_grid(unpack_bars(members), self.series[p].timeframe, self.bars_kept)
            current = version == str(FEATURE_VERSION).encode() and rows_meta == self._rows_text
            rows = unpack_window(blob, self.window) if current else None
            if rows is None:
                stale.append(p)
                rows = window_rows(grid, self.window)
            self.mirror.reset(p, grid, rows, int(last))
        await self._replace(stale)
        await self._restore(lost)

    async def _restore(self, positions: Sequence[int]) -> None:
        """Rewrite series whose keys Redis no longer has from the mirror.

        The mirror holds only what the store script confirmed, and this process is
        the only writer of its series, so an empty series next to a filled mirror
        means Redis lost its data (a restart without persistence, a flush): the
        windows come back at once instead of after a full warm-up without predictions.
        """
        if not positions:
            return
        await self._replace(positions)
        if self.metrics is not None:
            self.metrics.store_restored.inc(len(positions))
        log.warning(
            "redis had lost these series; rewritten from memory",
            series=len(positions), first=self.series[positions[0]].tag,
        )  # fmt: skip

    async def warm_up(self, series: Series, records: Sequence[BarRecord]) -> None:
        """Merge backfilled bars into the stored ones and recompute the window.

        The series' stored state is read back from Redis first. Bars already
        stored win over records with the same open time (closed bars do not
        change). Grid positions between the bars that neither the store nor
        ``records`` hold are missing bars (NaN rows): pass every bar the
        exchange has for the span. Writes nothing when nothing changes.
        """
        position = int(self.mirror.positions([series])[0])
        new = self._bar_matrix(records, series)
        with self._timed("warm_up"):
            await self._load([position])
            present = self.mirror.present_bars(position)
            if not len(new) and not len(present):
                return
            grid = merged_grid(np.concatenate([present, new]), series.timeframe, self.bars_kept)
            rows = window_rows(grid, self.window)
            last = int(grid[-1, 0])
            same_bars = np.array_equal(grid[:, 1:], self.mirror.bars[position, :, 1:], True)
            if same_bars and last == self.mirror.last[position]:
                return
            self.mirror.reset(position, grid, rows, last)
            await self._replace([position])

    async def _replace(self, positions: Sequence[int]) -> None:
        """Write the mirror's state of these series over the stored one, one pipeline."""
        if positions:

            def queue(pipe: Any) -> None:
                for p in positions:
                    self._queue_replace(pipe, p)

            await self._execute(queue)

    def _queue_replace(self, pipe: Any, p: int) -> None:
        bars = self.mirror.present_bars(p)
        pairs: list[bytes | int] = []
        for open_ms, member in zip(bars[:, 0].astype(np.int64), pack_bars(bars), strict=True):
            pairs += [int(open_ms), member]
        args = ("replace", int(self.mirror.last[p]), FEATURE_VERSION, self.window,
                pack_window(self.mirror.rows[p]), self._ttl_ms[p], *pairs)  # fmt: skip
        pipe.execute_command("EVALSHA", self._sha, 3, *self._keys[p], *args)

    # ---------------------------------------------------------------- appending

    def plan(self, records: Sequence[BarRecord], allow_gap: bool = False) -> AppendPlan:
        """Work out an append against the mirror without sending it (:meth:`commit` does).

        The plan says which series its first round appends (:attr:`AppendPlan.series`)
        and their windows as they will be once Redis confirms it
        (:meth:`AppendPlan.windows`): the bar loop starts the forward pass on them while
        the commit is in flight. It is a forecast: the mirror only changes after Redis
        confirmed, and a round Redis answers otherwise is reloaded and tried again.
        """
        rounds = _rounds(records)
        first = self._plan_round([records[i] for i in rounds[0]], allow_gap) if rounds else None
        return AppendPlan(tuple(records), allow_gap, rounds, first, self.mirror)

    async def commit(self, plan: AppendPlan) -> list[AppendResult]:
        """Send a plan, one pipeline per round (a round = at most one bar per series)."""
        results: list[AppendResult | None] = [None] * len(plan.records)
        with self._timed("append"):
            for k, round_positions in enumerate(plan.rounds):
                if k == 0 and plan.first is not None and plan.current:
                    planned = plan.first
                else:  # the mirror moved on since (an earlier round): plan it now
                    chosen = [plan.records[i] for i in round_positions]
                    planned = self._plan_round(chosen, plan.allow_gap)
                appended = await self._send_round(planned, plan.allow_gap)
                for i, result in zip(round_positions, appended, strict=True):
                    results[i] = result
        done = [r for r in results if r is not None]
        self._count_gaps(done)
        return done

    async def append(
        self, records: Sequence[BarRecord], allow_gap: bool = False
    ) -> list[AppendResult]:
        """Append closed bars: :meth:`plan` and :meth:`commit` in one."""
        return await self.commit(self.plan(records, allow_gap))

    def _plan_round(self, records: Sequence[BarRecord], allow_gap: bool) -> _Round:
        positions = self.mirror.positions([r.series for r in records])
        new = self._bar_matrix(records)
        expected = self._predict(positions, new[:, 0].astype(np.int64), allow_gap)
        appending = np.array([status == "appended" for status in expected], dtype=bool)
        advance = self.mirror.advance(positions[appending], new[appending])
        newest = advance.newest_rows.astype(ROW_DTYPE)
        rows = [b""] * len(records)
        for j, row in zip(np.flatnonzero(appending), newest, strict=True):
            rows[j] = row.tobytes()
        return _Round(tuple(records), positions, new, expected, appending, advance, rows)

    async def _send_round(
        self, planned: _Round, allow_gap: bool, retry: bool = True
    ) -> list[AppendResult]:
        records, positions = planned.records, planned.positions
        groups = self._call_groups(positions)

        def queue(pipe: Any) -> None:
            for group in groups:
                self._queue_append(pipe, group, positions, planned.new, planned.rows, allow_gap=allow_gap)  # fmt: skip

        replies: list[Any] = [None] * len(records)
        for group, reply in zip(groups, await self._execute(queue), strict=True):
            for k, j in enumerate(group):
                replies[j] = (reply[2 * k], reply[2 * k + 1])
        statuses = [reply[0].decode() for reply in replies]
        if statuses != planned.expected:
            return await self._resync(records, positions, allow_gap, statuses, retry)
        self.mirror.commit(planned.advance)
        return [self._result(r, s, int(reply[1])) for r, s, reply in zip(records, statuses, replies, strict=True)]  # fmt: skip

    def _call_groups(self, positions: IntArray) -> list[list[int]]:
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

    async def _resync(
        self,
        records: Sequence[BarRecord],
        positions: IntArray,
        allow_gap: bool,
        statuses: list[str],
        retry: bool,
    ) -> list[AppendResult]:
        """The stored state differs from the mirror: reload these series, then try once more."""
        if not retry:
            raise StoreConflict(f"Redis disagrees with the mirror after a reload: {statuses}")
        await self._load([int(p) for p in positions])
        return await self._send_round(self._plan_round(records, allow_gap), allow_gap, retry=False)

    def _predict(self, positions: IntArray, open_ms: IntArray, allow_gap: bool) -> list[str]:
        last = self.mirror.last[positions]
        nxt = last + self.mirror.bar_ms[positions]
        duplicate = (last != EMPTY) & (open_ms <= last)
        gap = (last != EMPTY) & (open_ms > nxt) & (not allow_gap)
        return ["duplicate" if d else "gap" if g else "appended" for d, g in zip(duplicate, gap, strict=True)]  # fmt: skip

    def _queue_append(
        self,
        pipe: Any,
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
        pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)

    def _result(self, record: BarRecord, status: str, value: int) -> AppendResult:
        expected = value if status == "gap" else None
        return AppendResult(record.series, record.candle.open_ms, cast(Status, status), expected)

    def _bar_matrix(self, records: Sequence[BarRecord], series: Series | None = None) -> FloatArray:
        for record in records:
            problem = record.candle.problem()
            if problem is not None:
                raise ValueError(
                    f"refusing {record.series.tag} bar {record.candle.open_ms}: {problem}"
                )
            if series is not None and record.series != series:
                raise ValueError(f"record of {record.series.tag} passed for {series.tag}")
        return np.array([r.values() for r in records], dtype=np.float64).reshape(
            -1, len(BAR_COLUMNS)
        )

    # ---------------------------------------------------------------- plumbing

    async def _execute(self, queue: Callable[[Any], object]) -> list[Any]:
        return await run_script_pipeline(self.redis, SCRIPT, queue)

    def _count_gaps(self, results: Sequence[AppendResult]) -> None:
        if self.metrics is None:
            return
        for result in results:
            if result.status == "gap":
                self.metrics.gaps.labels(result.series.exchange, result.series.timeframe).inc()

    @contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except RedisError:
            if self.metrics is not None:
                self.metrics.redis_errors.labels(operation).inc()
            raise
        if self.metrics is not None:
            self.metrics.store_seconds.labels(operation).observe(time.perf_counter() - start)
