"""Sending a planned append through ``store.lua`` and moving the mirror once Redis confirmed.

The script checks that the mirror's view (last open time, feature version,
window length) is the stored one. When Redis answers otherwise, the store
reloads those series and tries once more, so Redis stays authoritative; a second
disagreement is a :class:`StoreConflict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from streamer.store_format import AppendResult, BarRecord, Status
from streamer.store_load import load
from streamer.store_plan import AppendPlan, Round, plan_round
from streamer.store_script import StoreScript
from whalecast.redis_ports import RedisPipeline, array, integer, text


class StoreConflict(RuntimeError):
    """Redis kept disagreeing with this process's view of a series (another writer?)."""


async def commit(script: StoreScript, plan: AppendPlan) -> list[AppendResult]:
    """Send a plan, one pipeline per round (a round = at most one bar per series)."""
    results: list[AppendResult | None] = [None] * len(plan.records)
    with script.timed("append"):
        for k, round_positions in enumerate(plan.rounds):
            if k == 0 and plan.first is not None and plan.current:
                planned = plan.first
            else:  # the mirror moved on since (an earlier round): plan it now
                chosen = [plan.records[i] for i in round_positions]
                planned = plan_round(script.mirror, chosen, plan.allow_gap)
            appended = await _send_round(script, planned, plan.allow_gap)
            for i, result in zip(round_positions, appended, strict=True):
                results[i] = result
    done = [r for r in results if r is not None]
    _count_gaps(script, done)
    return done


async def _send_round(
    script: StoreScript, planned: Round, allow_gap: bool, retry: bool = True
) -> list[AppendResult]:
    records, positions = planned.records, planned.positions
    groups = script.call_groups(positions)

    def queue(pipe: RedisPipeline) -> None:
        for group in groups:
            script.queue_append(pipe, group, positions, planned.new, planned.rows, allow_gap=allow_gap)  # fmt: skip

    replies: list[tuple[str, int]] = [("", 0)] * len(records)
    for group, reply in zip(groups, await script.execute(queue), strict=True):
        answers = array(reply)  # status and value of each series of the call
        for k, j in enumerate(group):
            status, value = answers[2 * k], answers[2 * k + 1]
            if isinstance(status, bytes) and isinstance(value, int):  # as store.lua answers
                replies[j] = (status.decode(), value)
            else:  # read strictly: raises on another shape
                replies[j] = (text(status), integer(value))
    statuses = [status for status, _ in replies]
    if statuses != planned.expected:
        return await _resync(script, planned, allow_gap, statuses, retry)
    script.mirror.commit(planned.advance)
    return [_result(r, s, value) for r, (s, value) in zip(records, replies, strict=True)]


async def _resync(
    script: StoreScript, planned: Round, allow_gap: bool, statuses: list[str], retry: bool
) -> list[AppendResult]:
    """The stored state differs from the mirror: reload these series, then try once more."""
    if not retry:
        raise StoreConflict(f"Redis disagrees with the mirror after a reload: {statuses}")
    await load(script, [int(p) for p in planned.positions])
    again = plan_round(script.mirror, planned.records, allow_gap)
    return await _send_round(script, again, allow_gap, retry=False)


def _result(record: BarRecord, status: str, value: int) -> AppendResult:
    expected = value if status == "gap" else None
    return AppendResult(record.series, record.candle.open_ms, cast(Status, status), expected)


def _count_gaps(script: StoreScript, results: Sequence[AppendResult]) -> None:
    if script.metrics is None:
        return
    for result in results:
        if result.status == "gap":
            script.metrics.gaps.labels(result.series.exchange, result.series.timeframe).inc()
