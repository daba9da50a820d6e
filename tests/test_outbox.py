"""The Redis outbox's rules (outage, ordering, drain), without Redis."""

from __future__ import annotations

import itertools

from inference.outbox import REDIS_RETRY_MAX_SECONDS, Outbox
from inference.publisher import PredictionOut
from streamer.store_format import BarRecord
from whalecast.domain import Candle, Series, WhaleBar

H = 3_600_000
T0 = 1_767_225_600_000
BTC = Series("binance", "BTC/USDT", "1h")
ETH = Series("binance", "ETH/USDT", "1h")


def record(series: Series, open_ms: int) -> BarRecord:
    candle = Candle(series.exchange, series.symbol, series.timeframe, open_ms,
                    100.0, 101.0, 99.0, 100.5, 5.0, True)  # fmt: skip
    return BarRecord(candle, WhaleBar(0.0, 0.0, 0, 0.0))


def prediction(series: Series, open_ms: int) -> PredictionOut:
    return PredictionOut(series, open_ms, open_ms + H, "lstm", "v1", "p_up_next_bar", 0.5, 1.0)


def opens(group: list[tuple[BarRecord, float]] | None) -> list[tuple[Series, int, float]]:
    assert group is not None
    return [(r.series, r.candle.open_ms, arrival) for r, arrival in group]


def test_the_backlog_hands_bars_back_oldest_first() -> None:
    box: Outbox[BarRecord] = Outbox()
    box.keep([record(BTC, T0 + H), record(ETH, T0 + H)], arrival=2.0)
    box.keep([record(BTC, T0)], arrival=1.0)  # a burst after an outage: older came later
    assert box.candles_waiting == 3
    assert opens(box.next_bar()) == [(BTC, T0, 1.0)]
    assert opens(box.next_bar()) == [(BTC, T0 + H, 2.0), (ETH, T0 + H, 2.0)]
    assert box.next_bar() is None and box.empty


def test_a_bar_the_store_did_not_take_goes_back_in_front_of_later_arrivals() -> None:
    box: Outbox[BarRecord] = Outbox()
    box.keep([record(BTC, T0)], arrival=1.0)
    group = box.next_bar()
    assert group is not None
    box.keep([record(ETH, T0), record(BTC, T0 + H)], arrival=2.0)  # while the store was away
    box.store_failed(group)
    assert opens(box.next_bar()) == [(BTC, T0, 1.0), (ETH, T0, 2.0)]
    assert opens(box.next_bar()) == [(BTC, T0 + H, 2.0)]
    box.store_failed([])  # nothing taken, nothing kept
    assert box.empty


def test_predictions_wait_in_order_and_are_checked_after_a_failed_attempt() -> None:
    box: Outbox[BarRecord] = Outbox()
    first = [prediction(BTC, T0), prediction(ETH, T0)]
    pending, check = box.to_publish(first)
    assert pending == first and not check  # the first attempt
    # Redis failed: everything stays, and newer predictions queue behind it
    later = [prediction(BTC, T0 + H)]
    pending, check = box.to_publish(later)
    assert pending == first + later and check
    assert box.predictions_waiting == 3 and not box.may_store  # the backlog waits
    box.narrowed(pending[1:])  # the lost reply: BTC at T0 did go through
    pending, check = box.to_publish([])  # failed again after the check
    assert pending == first[1:] + later and check
    box.published()
    assert box.to_publish([]) == ([], False) and box.empty and box.may_store


def test_drain_reports_what_redis_did_not_take() -> None:
    box: Outbox[BarRecord] = Outbox()
    box.keep([record(BTC, T0), record(ETH, T0), record(BTC, T0 + H)], arrival=1.0)
    box.to_publish([prediction(BTC, T0 - H)])
    assert (box.candles_waiting, box.predictions_waiting) == (3, 1)
    assert not box.empty


def test_retries_back_off_to_a_cap_and_start_over_each_outage() -> None:
    box: Outbox[BarRecord] = Outbox(retry_initial_seconds=0.1)
    delays = list(itertools.islice(box.retry_delays(), 12))
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= REDIS_RETRY_MAX_SECONDS for d in delays)
    assert delays[-1] >= REDIS_RETRY_MAX_SECONDS / 2  # capped, not stuck at the start
    assert next(box.retry_delays()) <= 0.1  # a new outage starts from the initial delay
    assert Outbox(retry_initial_seconds=60.0).retry_initial == REDIS_RETRY_MAX_SECONDS
