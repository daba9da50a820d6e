"""Online scoring arithmetic: direction hits, log-volume error, rolling window, bounds."""

from __future__ import annotations

import math

import pytest

from inference import scoring
from inference.publisher import PredictionOut
from inference.score_math import brier, pinball
from inference.scoring import LiveScorer, Rolling, direction_hit, log_volume_error
from whalecast.domain import Candle, Series
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


def test_rolling_mean_stays_exact_over_a_long_run() -> None:
    rolling = Rolling(7)
    values = [0.1 * (i % 13) + 1e-9 * i for i in range(10_000)]
    for i, value in enumerate(values, start=1):
        rolling.add(value)
        assert rolling.mean() == pytest.approx(
            sum(values[max(0, i - 7) : i]) / min(i, 7), rel=1e-12
        )


def test_a_bar_of_many_series_scores_like_one_call_per_series() -> None:
    one, many = Metrics(process=False), Metrics(process=False)
    scorers = LiveScorer(window=50, metrics=one), LiveScorer(window=50, metrics=many)
    series = [Series("binance", f"C{i}/USDT", "1h") for i in range(6)]
    for t in range(4):
        bars = [(s, T0 + t * H, 100.0 + i * t, 10.0 + t) for i, s in enumerate(series)]
        for bar in bars:
            scorers[0].observe_bar(*bar)
        assert scorers[1].observe_bars(bars) == (0 if t == 0 else 2 * len(series))
        for scorer in scorers:
            scorer.expect([pred(s, T0 + t * H, m, 0.3 + i / 10) for i, s in enumerate(series) for m in ("direction", "volume")])  # fmt: skip
    for metrics in (one, many):
        assert gauge(metrics.live_scored, "direction") == 3 * len(series)
    assert gauge(many.live_accuracy, "direction") == gauge(one.live_accuracy, "direction")
    assert gauge(many.live_mae, "volume") == pytest.approx(gauge(one.live_mae, "volume"))


def candle(series: Series, open_ms: int, close: float) -> Candle:
    return Candle(series.exchange, series.symbol, series.timeframe, open_ms,
                  close, close, close, close, 10.0, True)  # fmt: skip


def test_stored_bars_are_scored_at_the_next_publish_before_its_predictions_are_kept() -> None:
    scorer = LiveScorer(window=3, metrics=Metrics(process=False))
    scorer.stored([candle(BTC, T0, 100.0)])
    assert scorer.expect([pred(BTC, T0, "direction", 0.7)]) == 0  # its bar is not seen yet
    scorer.published([pred(BTC, T0, "direction", 0.7)])  # the bar first, then the prediction
    assert scorer.pending == 1
    scorer.stored([candle(BTC, T0 + H, 101.0)])
    assert scorer.pending == 1  # held: scored off the critical path, at the next publish
    scorer.published([])
    assert scorer.pending == 0 and scorer.rolling("direction") == 1.0


def test_a_long_backfill_does_not_hold_stored_bars_without_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scoring, "HELD_MAX", 2)
    scorer = LiveScorer(window=3, metrics=Metrics(process=False))
    scorer.published([])
    scorer.stored([candle(BTC, T0, 100.0), candle(ETH, T0, 50.0)])
    assert scorer.expect([pred(BTC, T0, "direction", 0.7)]) == 0  # two held: not observed
    scorer.stored([candle(BTC, T0 + H, 101.0)])  # past the bound: observed at once
    assert scorer.expect([pred(BTC, T0 + H, "direction", 0.7)]) == 1


def horizon_pred(
    series: Series, open_ms: int, output: tuple[str, int, float | None], value: float
) -> PredictionOut:
    target, horizon, quantile = output
    return PredictionOut(series, open_ms, open_ms + H, "hz", "v", target, value, 0.0, horizon,
                         quantile)  # fmt: skip


def test_formulas_of_the_horizon_scores() -> None:
    assert pinball(0.9, math.e - 1, math.e**2 - 1) == pytest.approx(0.9)  # under: q * e
    assert pinball(0.9, math.e**2 - 1, math.e - 1) == pytest.approx(0.1)  # over: (1 - q) * |e|
    assert pinball(0.5, 10.0, 10.0) == 0.0
    assert brier(0.8, 100.0, 101.0) == pytest.approx(0.04)
    assert brier(0.8, 100.0, 100.0) == pytest.approx(0.64)


def test_a_horizon_output_is_scored_when_its_last_bar_closes() -> None:
    metrics = Metrics(process=False)
    scorer = LiveScorer(window=10, metrics=metrics)
    scorer.observe_bar(BTC, T0, close=100.0, volume=5.0)
    made = [
        horizon_pred(BTC, T0, ("volume_next_bars", 3, 0.9), 100.0),
        horizon_pred(BTC, T0, ("volume_next_bars", 3, 0.5), 50.0),
        horizon_pred(BTC, T0, ("volume_next_bars", 1, 0.9), 30.0),
        horizon_pred(BTC, T0, ("p_up_in_bars", 3, None), 0.7),
    ]
    assert scorer.expect(made) == 4
    assert scorer.observe_bar(BTC, T0 + H, close=90.0, volume=20.0) == 1  # the 1-bar quantile
    assert scorer.observe_bar(BTC, T0 + 2 * H, close=95.0, volume=30.0) == 0
    assert scorer.observe_bar(BTC, T0 + 3 * H, close=104.0, volume=10.0) == 3
    assert scorer.pending == 0
    scores = scorer.horizons
    total = 20.0 + 30.0 + 10.0  # the three bars after the one predicted from
    out = ("hz", "volume_next_bars", 3, 0.9)
    assert scores.mean(out, "pinball") == pytest.approx(pinball(0.9, 100.0, total))
    assert scores.mean(out, "coverage") == 1.0  # 60 <= 100
    assert scores.mean(("hz", "volume_next_bars", 3, 0.5), "coverage") == 0.0  # 60 > 50
    assert scores.mean(("hz", "volume_next_bars", 1, 0.9), "coverage") == 1.0  # 20 <= 30
    direction = ("hz", "p_up_in_bars", 3, None)
    assert scores.mean(direction, "brier") == pytest.approx(0.09)  # 104 > 100: up
    assert scores.mean(direction, "hit") == 1.0
    assert metrics.live_coverage.labels("hz", "3", "0.9")._value.get() == 1.0
    assert metrics.live_pinball.labels("hz", "3", "0.5")._value.get() == pytest.approx(
        pinball(0.5, 50.0, total)
    )
    assert metrics.live_brier.labels("hz", "3")._value.get() == pytest.approx(0.09)
    assert metrics.live_horizon_hits.labels("hz", "3")._value.get() == 1.0
    assert gauge(metrics.live_scored, "hz") == 4.0
    assert scorer.rolling("hz") is None  # the v1 gauges stay the v1 models'


def test_a_horizon_with_a_missing_bar_is_dropped() -> None:
    scorer = LiveScorer(window=10, metrics=Metrics(process=False))
    scorer.observe_bar(ETH, T0, close=10.0, volume=1.0)
    scorer.expect([horizon_pred(ETH, T0, ("volume_next_bars", 3, 0.9), 5.0)])
    scorer.observe_bar(ETH, T0 + H, close=10.0, volume=1.0)
    # the bar at T0 + 2H never came: the sum of three bars cannot be known
    assert scorer.observe_bar(ETH, T0 + 3 * H, close=10.0, volume=1.0) == 0
    assert scorer.pending == 0
    assert scorer.horizons.mean(("hz", "volume_next_bars", 3, 0.9), "coverage") is None


def test_the_default_bound_grows_with_the_series_so_long_horizons_keep_scoring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 24-bar output waits 24 bars: with a fixed bound, enough series would push the
    scorer into dropping predictions that are still due. The default bound is per series."""
    monkeypatch.setattr(scoring, "PENDING_FLOOR", 1_000)
    scorer = LiveScorer(window=10, metrics=Metrics(process=False))
    many = [Series("binance", f"S{i}/USDT", "1h") for i in range(100)]
    outputs = [("volume_next_bars", 24, 0.5), ("volume_next_bars", 24, 0.9)]
    scored = 0
    for k in range(30):
        bar = T0 + k * H
        scored += scorer.observe_bars([(s, bar, 1.0, 1.0) for s in many])
        scorer.expect([horizon_pred(s, bar, out, 30.0) for s in many for out in outputs])
    assert scorer.pending == 100 * 2 * 24 > 1_000  # above the floor, and none dropped
    assert scorer.max_pending == 100 * scoring.PENDING_PER_SERIES
    assert scored == 100 * 2 * (30 - 24)  # every output whose 24 bars closed was scored
    assert LiveScorer(10, Metrics(process=False), max_pending=100).max_pending == 100
