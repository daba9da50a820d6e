"""Scoring, the block bootstrap, the backtest arithmetic and the promotion rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from training.backtest import BacktestConfig, net_returns, positions, run, summarize
from training.promote import decide
from training.scoring import (
    BlockBootstrap,
    accuracy,
    auc,
    balanced_accuracy,
    interval,
    log_loss,
    mae,
    mape,
    score,
)

HOUR = 3_600_000


def test_metrics_match_scikit_learn_and_hand_values() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(500) > 0.45).astype(float)
    p = np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.2, 500), 0.01, 0.99)
    p[:10] = 0.5  # ties
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p))
    assert accuracy(np.array([1.0, 0, 1, 0]), np.array([0.9, 0.2, 0.4, 0.6])) == 0.5
    # 3 ups (2 hit), 1 down (hit): (2/3 + 1) / 2
    assert balanced_accuracy(np.array([1.0, 1, 1, 0]), np.array([0.9, 0.8, 0.1, 0.3])) == (
        pytest.approx((2 / 3 + 1) / 2)
    )
    y_log = np.log1p(np.array([100.0, 0.0, 50.0]))
    p_log = np.log1p(np.array([110.0, 5.0, 40.0]))
    assert mape(y_log, p_log) == pytest.approx((10 / 100 + 10 / 50) / 2 * 100)  # zero left out
    assert mae(y_log, p_log) == pytest.approx(np.mean(np.abs(y_log - p_log)))


def test_block_bootstrap_interval_covers_the_true_value() -> None:
    """A classifier right 55% of the time, with day-long runs of correlated outcomes."""
    rng = np.random.default_rng(7)
    days, hours = 400, 24
    covered = 0
    for trial in range(20):
        day_effect = rng.normal(0, 0.15, days).repeat(hours)  # within-day correlation
        right = rng.random(days * hours) < np.clip(0.55 + day_effect, 0, 1)
        y = rng.integers(0, 2, days * hours).astype(float)
        p = np.where(right, y, 1 - y) * 0.8 + 0.1
        blocks = np.arange(days * hours) // hours
        boot = BlockBootstrap(blocks, 300, seed=trial)
        dist = boot.distributions({"accuracy": accuracy}, y, {"m": p})["accuracy"]["m"]
        est = interval(accuracy(y, p), dist)
        covered += est.low <= 0.55 <= est.high
    assert covered >= 17  # nominal 95%: 19 of 20 expected


def test_block_resampling_keeps_blocks_whole() -> None:
    blocks = np.repeat(np.arange(10), 5)
    boot = BlockBootstrap(blocks, 3, seed=0)
    for idx in boot.resamples():
        assert len(idx) == 50
        assert all(len(set(blocks[idx[i : i + 5]])) == 1 for i in range(0, 50, 5))


def test_paired_interval_sees_a_small_consistent_edge_unpaired_ones_miss() -> None:
    rng = np.random.default_rng(3)
    n = 24 * 300
    y = np.log1p(rng.lognormal(7, 1, n))
    base = y + rng.normal(0, 0.5, n)
    better = y + (base - y) * 0.97  # 3% smaller error on every sample
    boot = BlockBootstrap(np.arange(n) // 24, 300, seed=0)
    scored = score({"mae": mae}, y, {"model": better, "base": base}, boot)
    model, base_est = scored["models"]["model"]["mae"], scored["models"]["base"]["mae"]
    assert model["high"] > base_est["low"]  # the unpaired intervals overlap...
    diff = scored["paired"]["base"]["mae"]
    assert diff["high"] < 0 and diff["verdict"] == "better"  # ...the paired one does not


def test_backtest_hand_made_case() -> None:
    p = np.array([0.7, 0.7, 0.2, 0.6])
    r = np.array([0.10, -0.05, 0.02, 0.01])
    pos = positions(p, threshold=0.0, mode="long_flat")
    assert pos.tolist() == [1.0, 1.0, 0.0, 1.0]
    net = net_returns(pos, r, fees_bps=10)
    # enter (10 bps), hold, exit (10 bps), enter again (10 bps)
    assert np.allclose(net, [0.10 - 0.001, -0.05, -0.001, 0.01 - 0.001])
    out = summarize(net, pos, bars_per_year=8760)
    equity = np.cumprod(1 + net)
    assert out["total_return"] == pytest.approx(equity[-1] - 1)
    assert out["max_drawdown"] == pytest.approx(equity[2] / equity[0] - 1)
    assert out["turnover"] == 3.0
    assert out["win_rate"] == pytest.approx(2 / 3)  # 3 active bars, 2 profitable
    sd = np.std(net, ddof=1)
    assert out["sharpe"] == pytest.approx(np.mean(net) / sd * np.sqrt(8760))
    assert out["annual_volatility"] == pytest.approx(sd * np.sqrt(8760))

    short = positions(np.array([0.7, 0.3, 0.52, 0.45]), threshold=0.05, mode="long_short")
    assert short.tolist() == [1.0, -1.0, 0.0, 0.0]
    assert np.allclose(net_returns(short, np.full(4, 0.01), 10)[:2], [0.01 - 0.001, -0.01 - 0.002])


def test_backtest_per_series_and_buy_and_hold() -> None:
    frame = pd.DataFrame(
        {
            "series": ["a"] * 3 + ["b"] * 3,
            "target_ms": [HOUR, 2 * HOUR, 3 * HOUR] * 2,
            "bar_return": [0.01, 0.02, -0.01, 0.0, 0.01, 0.01],
        }
    )
    p = np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1])
    summary, curve = run(frame, p, BacktestConfig(fees_bps=0.0, bars_per_year=8760))
    a = summary["series"]["a"]
    assert a["strategy"]["total_return"] == pytest.approx(1.01 * 1.02 * 0.99 - 1)
    assert a["strategy"]["total_return"] == pytest.approx(a["buy_and_hold"]["total_return"])
    assert summary["series"]["b"]["strategy"]["total_return"] == 0.0
    costly, _ = run(frame, p, BacktestConfig(fees_bps=10.0, bars_per_year=8760))
    a_costly = costly["series"]["a"]
    assert a_costly["strategy_before_fees"] == a["strategy"]  # fees 0: the same as above
    assert a_costly["strategy"]["total_return"] == pytest.approx((1.01 - 0.001) * 1.02 * 0.99 - 1)
    assert np.allclose(curve["strategy"], [0.005, 0.01, -0.005])


def test_promotion_rule() -> None:
    refused = decide("auc", 0.53, ("logistic", 0.52), ("v1", 0.535))
    assert not refused.promote and "not better than serving v1" in refused.reason
    accepted = decide("auc", 0.54, ("logistic", 0.52), ("v1", 0.535))
    assert accepted.promote and not accepted.forced
    assert not decide("mae", 0.50, ("ridge", 0.49), None).promote  # lower is better
    assert decide("mae", 0.48, ("ridge", 0.49), None).promote
    assert not decide("mae", 0.485, ("ridge", 0.49), None, margin=0.01).promote
    forced = decide("auc", 0.50, ("logistic", 0.52), None, force=True)
    assert forced.promote and forced.forced and forced.reason.startswith("forced")
