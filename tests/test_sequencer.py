"""Ordering and gap rules of the sequencer, without any network."""

from __future__ import annotations

from dataclasses import replace

from streamer.sequencer import WS_EVIDENCE_ATTEMPTS, RestAnswer, Sequencer
from whalecast.domain import Candle, Series
from whalecast.metrics import Metrics

H = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
BTC = Series("binance", "BTC/USDT", "1h")
ETH = Series("binance", "ETH/USDT", "1h")


def bar(open_ms: int, series: Series = BTC, close: float = 100.0) -> Candle:
    return Candle(series.exchange, series.symbol, series.timeframe, open_ms,
                  100.0, 101.0, 99.0, close, 5.0, True)  # fmt: skip


class Harness:
    def __init__(self, trust_next_bar: bool = False, last: int = T0 - H) -> None:
        self.metrics = Metrics(process=False)
        self.emitted: list[tuple[Candle, str]] = []
        self.asked: list[Series] = []
        self.seq = Sequencer({BTC: last, ETH: last}, self.metrics,
                             lambda c, s: self.emitted.append((c, s)), self.asked.append,
                             trust_next_bar=trust_next_bar, retry_seconds=(1.0, 1.0))  # fmt: skip

    def opens(self, series: Series = BTC) -> list[int]:
        return [c.open_ms for c, _ in self.emitted if c.series == series]

    def counter(self, name: str) -> float:
        labels = {"exchange": "binance", "timeframe": "1h"}
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def test_bars_are_emitted_in_order_and_an_early_one_waits_for_the_gap() -> None:
    h = Harness()
    assert h.seq.closed(bar(T0), "ws_flag") is None
    assert h.seq.closed(bar(T0 + 2 * H), "ws_flag") is None  # T0+H is missing
    assert h.opens() == [T0] and h.asked == [BTC]
    h.seq.rest_answer(BTC, RestAnswer([bar(T0 + H)], [T0 + H, T0 + 2 * H]), wall=0.0)
    assert h.opens() == [T0, T0 + H, T0 + 2 * H]
    assert [s for _, s in h.emitted] == ["ws_flag", "rest", "ws_flag"]


def test_duplicates_and_out_of_order_bars_are_refused() -> None:
    h = Harness()
    h.seq.closed(bar(T0), "ws_flag")
    h.seq.closed(bar(T0 + 2 * H), "ws_flag")
    assert h.seq.closed(bar(T0), "ws_flag") == "duplicate"
    assert h.seq.closed(bar(T0 + 2 * H), "ws_flag") == "duplicate"  # waiting, already here
    assert h.seq.closed(bar(T0 - H), "ws_flag") == "out_of_order"
    assert h.seq.forming(replace(bar(T0 + 3 * H), closed=False)) is None
    assert h.seq.forming(replace(bar(T0 + 2 * H), closed=False)) == "out_of_order"


def test_a_hole_is_skipped_only_when_rest_shows_a_later_bar() -> None:
    h = Harness()
    h.seq.request_due(now_ms=T0 + 5 * H, grace_ms=0, wall=0.0)
    assert h.asked == [BTC, ETH]
    # the exchange never had T0 and T0+H: its answer starts at T0+2H
    h.seq.rest_answer(BTC, RestAnswer([bar(T0 + 2 * H), bar(T0 + 3 * H)], [T0 + 2 * H,
                      T0 + 3 * H, T0 + 4 * H]), wall=0.0)  # fmt: skip
    assert h.opens() == [T0 + 2 * H, T0 + 3 * H]
    assert h.counter("whalecast_bars_missing_total") == 2
    # the expected bar is shown but still forming (or invalid): no hole, ask again later
    h.seq.rest_answer(ETH, RestAnswer([], [T0]), wall=10.0)
    assert h.opens(ETH) == [] and h.counter("whalecast_bars_missing_total") == 2
    assert h.seq.request_due(now_ms=T0 + 5 * H - 1, grace_ms=0, wall=10.5) == 0  # backing off
    assert h.seq.request_due(now_ms=T0 + 5 * H - 1, grace_ms=0, wall=11.0) == 1


def test_websocket_bars_prove_a_hole_after_repeated_empty_answers() -> None:
    h = Harness()
    h.seq.closed(bar(T0 + 2 * H), "ws_flag")
    for attempt in range(WS_EVIDENCE_ATTEMPTS):
        assert h.opens() == [], attempt
        h.seq.rest_answer(BTC, RestAnswer([], []), wall=float(attempt * 100))
    assert h.opens() == [T0 + 2 * H]
    assert h.counter("whalecast_bars_missing_total") == 2


def test_deadline_asks_rest_once_grace_has_passed() -> None:
    h = Harness()
    grace = 10_000
    assert h.seq.request_due(now_ms=T0 + H + grace - 1, grace_ms=grace, wall=0.0) == 0
    assert h.seq.request_due(now_ms=T0 + H + grace, grace_ms=grace, wall=0.0) == 2
    assert h.seq.request_due(now_ms=T0 + H + grace, grace_ms=grace, wall=0.0) == 0  # queued


def test_the_next_bar_closes_the_previous_one_with_its_last_values() -> None:
    h = Harness(trust_next_bar=True)
    h.seq.forming(replace(bar(T0, close=100.5), closed=False))
    h.seq.forming(replace(bar(T0, close=100.7), closed=False))
    h.seq.forming(replace(bar(T0 + H), closed=False))
    assert [(c.open_ms, c.close, c.closed, s) for c, s in h.emitted] == [
        (T0, 100.7, True, "next_bar")
    ]


def test_with_a_closed_flag_a_next_bar_without_it_goes_to_rest() -> None:
    h = Harness(trust_next_bar=False)
    h.seq.forming(replace(bar(T0), closed=False))
    h.seq.forming(replace(bar(T0 + H), closed=False))
    assert h.emitted == [] and h.asked == [BTC]


def test_start_up_and_reconnects_backfill_bars_that_closed_meanwhile() -> None:
    h = Harness(last=T0 - 10 * H)
    h.seq.startup(now_ms=T0)
    assert h.asked == [BTC, ETH]
    fresh = Harness()
    fresh.seq.reconnected([BTC], now_ms=T0 + H - 1)  # T0 still forming: nothing to do
    fresh.seq.reconnected([BTC], now_ms=T0 + H)
    assert fresh.asked == [BTC]


def test_baseline_resumes_after_the_stored_bar_or_warms_up() -> None:
    base = Sequencer.baseline([BTC, ETH], {BTC: T0}, now_ms=T0 + 5 * H + 1, warmup_bars=3)
    assert base == {BTC: T0, ETH: T0 + H}  # ETH: 3 closed bars T0+2H..T0+4H to fetch
