"""Bar completion rules (history, caught up, ready, grace, late, older first, drain), no I/O."""

from __future__ import annotations

from collections.abc import Sequence

from inference.completion import BARS_KEPT, Arrival, BarCompletion
from whalecast.domain import Candle, Series

H = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
BTC = Series("binance", "BTC/USDT", "1h")
ETH = Series("binance", "ETH/USDT", "1h")
SOL = Series("binance", "SOL/USDT", "1h")
BTC_M = Series("binance", "BTC/USDT", "1m")
ALL = [BTC, ETH, SOL, BTC_M]
GRACE = 5.0


def bar(series: Series, open_ms: int) -> Candle:
    return Candle(series.exchange, series.symbol, series.timeframe, open_ms,
                  100.0, 101.0, 99.0, 100.5, 5.0, True)  # fmt: skip


class NewestStored:
    """Stands in for the window store's memory mirror: the newest stored bar per series."""

    def __init__(self) -> None:
        self.last: dict[Series, int] = {}

    def not_stored(self, series: Sequence[Series], open_ms: int) -> list[Series]:
        return [s for s in series if self.last.get(s, -1) < open_ms]

    def store(self, *candles: Candle) -> list[tuple[Candle, str]]:
        for c in candles:
            self.last[c.series] = c.open_ms
        return [(c, "appended") for c in candles]


def machine(
    stored: NewestStored | None = None, predicted_through: dict[Series, int] | None = None
) -> tuple[BarCompletion, NewestStored]:
    stored = stored or NewestStored()
    bars = BarCompletion(ALL, stored, grace_seconds=GRACE, predicted_through=predicted_through,
                         stored_upto=dict(stored.last))  # fmt: skip
    bars.start("binance", now_ms=T0 + H)  # the feed starts as the T0 bar closes
    return bars, stored


def arrive(
    bars: BarCompletion, stored: NewestStored, wall: float, *candles: Candle
) -> list[Arrival]:
    return [bars.arrive(c, wall) for c in bars.fresh(stored.store(*candles))]


def test_a_bar_is_ready_once_every_series_of_its_timeframe_arrived() -> None:
    bars, stored = machine()
    first = arrive(bars, stored, 10.0, bar(BTC, T0), bar(ETH, T0))
    assert first[0] == Arrival((("1h", T0)), deadline=10.0 + GRACE)
    assert not first[1].flush and first[1].deadline is None  # one deadline per bar
    (last,) = arrive(bars, stored, 11.0, bar(SOL, T0))  # the 1m series is not waited for
    assert last.flush and not last.late
    assert bars.queue(("1h", T0)) and not bars.queue(("1h", T0))  # one flush on its way
    take = bars.take(("1h", T0))
    assert take is not None and take.series == [BTC, ETH, SOL] and not take.late
    assert take.arrived == {BTC: 10.0, ETH: 10.0, SOL: 11.0}
    assert bars.due(100.0) == []  # taken: its deadline is gone


def test_the_grace_deadline_predicts_what_came_and_a_late_series_gets_its_own_batch() -> None:
    bars, stored = machine()
    arrive(bars, stored, 10.0, bar(BTC, T0))
    assert bars.due(10.0 + GRACE - 0.001) == []
    assert bars.due(10.0 + GRACE) == [("1h", T0)]
    assert bars.due(10.0 + GRACE) == []  # once
    take = bars.take(("1h", T0))
    assert take is not None and take.series == [BTC]
    (late,) = arrive(bars, stored, 20.0, bar(ETH, T0))
    assert late.late and late.flush and late.deadline is None
    bars.queue(("1h", T0))
    late_take = bars.take(("1h", T0))
    assert late_take is not None and late_take.series == [ETH] and late_take.late
    again = bars.take(("1h", T0))
    assert again is not None and again.series == []  # nothing twice


def test_a_series_that_stored_the_bar_before_is_not_waited_for() -> None:
    stored = NewestStored()
    stored.store(bar(ETH, T0))  # stored (and predicted) before a restart
    bars, _ = machine(stored)
    (a,) = arrive(bars, stored, 1.0, bar(BTC, T0))
    assert a.deadline is not None
    (b,) = arrive(bars, stored, 2.0, bar(SOL, T0))
    assert b.flush


def test_bars_closed_before_the_start_are_history_unless_past_the_handover_mark() -> None:
    bars, stored = machine(predicted_through={BTC: T0 - 3 * H})
    old = arrive(bars, stored, 1.0, bar(BTC, T0 - 3 * H), bar(ETH, T0 - 3 * H))
    assert all(a.history and not a.flush for a in old)
    (caught_up,) = arrive(bars, stored, 1.0, bar(BTC, T0 - 2 * H))
    assert caught_up.caught_up and not caught_up.history and caught_up.deadline is not None
    (eth,) = arrive(bars, stored, 1.0, bar(ETH, T0 - 2 * H))  # no mark: history
    assert eth.history
    # a bar closing within the grace before the start is live
    late_start = BarCompletion(ALL, NewestStored(), grace_seconds=GRACE)
    late_start.start("binance", now_ms=T0 + H + 4_000)
    assert not late_start.arrive(bar(BTC, T0), 1.0).history
    assert late_start.arrive(bar(BTC, T0 - H), 1.0).history


def test_an_exchange_not_started_yet_sees_only_history() -> None:
    bars = BarCompletion(ALL, NewestStored(), grace_seconds=GRACE)
    assert not bars.started("binance")
    assert bars.arrive(bar(BTC, T0), 1.0).history
    bars.start("binance", now_ms=T0 + H)
    bars.start("binance", now_ms=T0 + 9 * H)  # the first start stays
    assert bars.started("binance") and not bars.arrive(bar(BTC, T0), 1.0).history


def test_a_lost_reply_duplicate_is_fresh_but_a_replay_is_not() -> None:
    stored = NewestStored()
    stored.store(bar(BTC, T0))
    bars, _ = machine(stored)
    fresh = bars.fresh([(bar(BTC, T0), "duplicate"), (bar(ETH, T0), "duplicate"),
                        (bar(SOL, T0), "gap"), (bar(BTC_M, T0), "appended")])  # fmt: skip
    assert [c.series for c in fresh] == [ETH, BTC_M]
    assert bars.fresh([(bar(ETH, T0), "duplicate")]) == []  # handed on already


def test_a_pending_bar_is_predicted_before_the_series_next_bar_is_stored() -> None:
    bars, stored = machine()
    arrive(bars, stored, 1.0, bar(BTC, T0), bar(ETH, T0))
    assert bars.older_pending([bar(SOL, T0 + H)]) == []  # SOL waits for nothing
    assert bars.older_pending([bar(BTC, T0)]) == []  # not older
    assert bars.older_pending([bar(ETH, T0 + H)]) == [("1h", T0)]
    assert bars.older_pending([bar(BTC_M, T0 + H)]) == []  # another timeframe
    bars.take(("1h", T0))
    assert bars.older_pending([bar(ETH, T0 + H)]) == []


def test_a_burst_after_an_outage_is_predicted_one_bar_at_a_time() -> None:
    bars, stored = machine()
    keys = []
    for k in range(3):
        open_ms = T0 + k * H
        group = [bar(BTC, open_ms), bar(ETH, open_ms), bar(SOL, open_ms)]
        keys += bars.older_pending(group)
        for key in bars.older_pending(group):
            bars.take(key)
        arrivals = arrive(bars, stored, 50.0, *group)
        assert arrivals[-1].flush
        take = bars.take(("1h", open_ms))
        assert take is not None and take.series == [BTC, ETH, SOL]
    assert keys == []  # each bar completed before the next came


def test_drain_finds_every_bar_with_arrivals_not_predicted() -> None:
    bars, stored = machine()
    minute = T0 + H - 60_000
    arrive(bars, stored, 1.0, bar(BTC, T0), bar(BTC_M, minute))
    bars.take(("1m", minute))
    assert bars.unfinished() == [("1h", T0)]
    bars.take(("1h", T0))
    assert bars.unfinished() == []


def test_the_early_pass_is_offered_only_when_a_live_bar_completes() -> None:
    bars, stored = machine()
    full = [bar(BTC, T0), bar(ETH, T0), bar(SOL, T0)]
    assert bars.completes(full) == (("1h", T0), [])
    assert bars.completes(full[:2]) is None  # SOL can still bring it
    assert bars.completes([*full, bar(BTC, T0 + H)]) is None  # two bars
    assert bars.completes([]) is None
    arrive(bars, stored, 1.0, *full[:2])
    assert bars.completes(full[2:]) == (("1h", T0), [BTC, ETH])
    arrive(bars, stored, 1.0, full[2])
    bars.take(("1h", T0))
    assert bars.completes([bar(SOL, T0)]) is None  # late
    history = [bar(s, T0 - 2 * H) for s in (BTC, ETH, SOL)]
    assert bars.completes(history) is None
    unstarted = BarCompletion(ALL, NewestStored(), grace_seconds=GRACE)
    assert unstarted.completes(full) is None


def test_resumed_bars_are_predicted_as_stored() -> None:
    bars = BarCompletion(ALL, NewestStored(), grace_seconds=GRACE)  # before the feeds start
    assert bars.resume(bar(ETH, T0), 1.0) == ("1h", T0)
    bars.resume(bar(BTC, T0), 1.0)
    take = bars.take(("1h", T0))
    assert take is not None and take.series == [BTC, ETH]


def test_old_bars_are_forgotten_a_few_bars_behind() -> None:
    bars, stored = machine()
    minute = T0 + H - 60_000  # the 1m bar closing as the feed starts
    arrive(bars, stored, 1.0, bar(BTC, T0), bar(BTC_M, minute))
    newest = ("1h", T0 + (BARS_KEPT + 1) * H)
    assert bars.forget_old(("1h", T0 + BARS_KEPT * H)) == []
    assert bars.forget_old(newest) == [("1h", T0)]
    assert bars.take(("1h", T0)) is None and bars.queue(("1h", T0))
    assert bars.unfinished() == [("1m", minute)] and len(bars) == 1
