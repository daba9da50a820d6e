"""Online scoring arithmetic: direction hits, log-volume error, rolling window, bounds."""

from __future__ import annotations

import math

import pytest

from inference.publisher import PredictionOut
from inference.scoring import LiveScorer, direction_hit, log_volume_error
from whalecast.domain import Series
from whalecast.metrics import Metrics

H = 3_600_000
T0 = 1_767_225_600_000
BTC = Series("binance", "BTC/USDT", "1h")
ETH = Series("binance", "ETH/USDT", "1h")


def pred(series: Series, open_ms: int, model: str, value: float) -> PredictionOut:
    target = "p_up_next_bar" if model == "direction" else "next_bar_volume"
    return PredictionOut(series, open_ms, open_ms + H, model, "v", target, value, 0.0)


def gauge(metric: object, model: str) -> float:
    return float(metric.labels(model)._value.get())  # type: ignore[attr-defined]


def test_formulas() -> None:
    assert direction_hit(0.6, 100.0, 101.0) == 1.0
    assert direction_hit(0.6, 100.0, 99.0) == 0.0
    assert direction_hit(0.4, 100.0, 99.0) == 1.0
    assert direction_hit(0.5, 100.0, 100.0) == 0.0  # flat is not up; 0.5 says up
    assert direction_hit(0.49, 100.0, 100.0) == 1.0
    assert log_volume_error(math.e - 1, math.e**2 - 1) == pytest.approx(1.0)


def test_scores_when_the_outcome_bar_arrives() -> None:
    metrics = Metrics(process=False)
    scorer = LiveScorer(window=3, metrics=metrics)
    scorer.observe_bar(BTC, T0, close=100.0, volume=10.0)
    assert scorer.expect([pred(BTC, T0, "direction", 0.7), pred(BTC, T0, "volume", 20.0)]) == 2
    assert scorer.pending == 2
    assert scorer.observe_bar(BTC, T0 + H, close=105.0, volume=30.0) == 2
    assert scorer.pending == 0
    assert gauge(metrics.live_accuracy, "direction") == 1.0
    assert gauge(metrics.live_mae, "volume") == pytest.approx(abs(math.log1p(20) - math.log1p(30)))
    assert gauge(metrics.live_scored, "direction") == 1.0
    # a miss, then two more hits: the window of 3 forgets the first
    closes = [(0.8, 104.0), (0.2, 103.0), (0.9, 110.0)]
    for i, (p, close) in enumerate(closes, start=1):
        scorer.expect([pred(BTC, T0 + i * H, "direction", p)])
        scorer.observe_bar(BTC, T0 + (i + 1) * H, close=close, volume=1.0)
    assert scorer.rolling("direction") == pytest.approx(2 / 3)
    assert gauge(metrics.live_scored, "direction") == 4.0


def test_unscorable_and_gaps_are_dropped() -> None:
    scorer = LiveScorer(window=10, metrics=Metrics(process=False))
    assert scorer.expect([pred(ETH, T0, "direction", 0.6)]) == 0  # its bar was never observed
    scorer.observe_bar(ETH, T0, 10.0, 1.0)
    scorer.expect([pred(ETH, T0, "direction", 0.6), pred(ETH, T0, "volume", math.nan)])
    assert scorer.pending == 1
    assert scorer.observe_bar(ETH, T0 + 2 * H, 11.0, 1.0) == 0  # the outcome bar was skipped
    assert scorer.pending == 0
    assert scorer.rolling("direction") is None


def test_pending_is_bounded() -> None:
    scorer = LiveScorer(window=10, metrics=Metrics(process=False), max_pending=100)
    for i in range(300):
        series = Series("binance", f"S{i}/USDT", "1h")
        scorer.observe_bar(series, T0, 1.0, 1.0)
        scorer.expect([pred(series, T0, "direction", 0.6)])
    assert scorer.pending == 100
    newest = Series("binance", "S299/USDT", "1h")
    assert scorer.observe_bar(newest, T0 + H, 2.0, 1.0) == 1
    oldest = Series("binance", "S0/USDT", "1h")
    assert scorer.observe_bar(oldest, T0 + H, 2.0, 1.0) == 0
