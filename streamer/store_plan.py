"""An append worked out against the mirror, before anything is sent (pure, no I/O).

:meth:`streamer.store.WindowStore.plan` makes an :class:`AppendPlan`; it says which
series its first round appends and their windows as committing it will leave them,
so the forward pass can start while :meth:`~streamer.store.WindowStore.commit`
is in flight. A round holds at most one bar per series; what Redis should answer
for each record (``expected``) is worked out here from the mirror's last open times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamer.features import BAR_COLUMNS
from streamer.mirror import EMPTY, Advance, BoolArray, Float32Array, FloatArray, IntArray, Mirror
from streamer.store_format import ROW_DTYPE, BarRecord
from whalecast.domain import Series


@dataclass(frozen=True)
class Round:
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
        first: Round | None,
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


def plan_append(mirror: Mirror, records: Sequence[BarRecord], allow_gap: bool) -> AppendPlan:
    """Split ``records`` into rounds and work out the first against the mirror."""
    rounds = split_rounds(records)
    first = plan_round(mirror, [records[i] for i in rounds[0]], allow_gap) if rounds else None
    return AppendPlan(tuple(records), allow_gap, rounds, first, mirror)


def split_rounds(records: Sequence[BarRecord]) -> list[list[int]]:
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


def plan_round(mirror: Mirror, records: Sequence[BarRecord], allow_gap: bool) -> Round:
    """One round: the statuses Redis should answer and the mirror's advance if it does."""
    positions = mirror.positions([r.series for r in records])
    new = bar_matrix(records)
    expected = expected_statuses(mirror, positions, new[:, 0].astype(np.int64), allow_gap)
    appending = np.array([status == "appended" for status in expected], dtype=bool)
    advance = mirror.advance(positions[appending], new[appending])
    newest = advance.newest_rows.astype(ROW_DTYPE)
    rows = [b""] * len(records)
    for j, row in zip(np.flatnonzero(appending), newest, strict=True):
        rows[j] = row.tobytes()
    return Round(tuple(records), positions, new, expected, appending, advance, rows)


def expected_statuses(
    mirror: Mirror, positions: IntArray, open_ms: IntArray, allow_gap: bool
) -> list[str]:
    """What ``store.lua`` answers for these bars if Redis holds what the mirror does."""
    last = mirror.last[positions]
    nxt = last + mirror.bar_ms[positions]
    duplicate = (last != EMPTY) & (open_ms <= last)
    gap = (last != EMPTY) & (open_ms > nxt) & (not allow_gap)
    return ["duplicate" if d else "gap" if g else "appended" for d, g in zip(duplicate, gap, strict=True)]  # fmt: skip


def bar_matrix(records: Sequence[BarRecord], series: Series | None = None) -> FloatArray:
    """The records in ``BAR_COLUMNS`` order; a record that is not a valid closed bar
    (or, when ``series`` is given, is of another series) is refused."""
    for record in records:
        problem = record.candle.problem()
        if problem is not None:
            raise ValueError(f"refusing {record.series.tag} bar {record.candle.open_ms}: {problem}")
        if series is not None and record.series != series:
            raise ValueError(f"record of {record.series.tag} passed for {series.tag}")
    return np.array([r.values() for r in records], dtype=np.float64).reshape(-1, len(BAR_COLUMNS))
