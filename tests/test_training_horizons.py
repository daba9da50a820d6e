"""Multi-horizon targets, their baselines and the quantile scores, on tiny frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.dataset import build_samples, make_cuts, prepare
from training.history import from_csv
from training.horizon_baselines import (
    hour_of_week,
    profile_sum,
    seasonal_profile,
    with_quantiles,
)
from training.horizons import complete, ups_at, volume_sums
from training.quantile_scoring import (
    COVERAGE,
    QUANTILE_METRICS,
    judge_horizon,
    pinball,
    score_quantiles,
)
from training.scoring import BlockBootstrap

HOUR = 3_600_000
DATA = Path(__file__).resolve().parents[1] / "streamer" / "data"


def test_volume_sums_add_the_next_h_bars_and_stop_at_the_end() -> None:
    volume = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    got = volume_sums(volume, np.array([0, 1, 3]), [1, 2, 3])
    assert np.allclose(np.expm1(got[0]), [2.0, 5.0, 9.0])
    assert np.allclose(np.expm1(got[1]), [3.0, 7.0, 12.0])
    assert np.isclose(np.expm1(got[2, 0]), 5.0) and np.isnan(got[2, 1:]).all()


def test_a_missing_bar_makes_only_the_sums_over_it_unknown() -> None:
    volume = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    got = volume_sums(volume, np.array([0, 2]), [1, 2])
    assert np.isclose(np.expm1(got[0, 0]), 2.0) and np.isnan(got[0, 1])
    assert np.allclose(np.expm1(got[1]), [4.0, 9.0])  # after the hole: defined again


def test_up_at_h_compares_the_close_h_bars_ahead_with_the_close_now() -> None:
    close = np.array([10.0, 11.0, 9.0, 12.0])
    got = ups_at(close, np.array([0, 1, 2]), [1, 2])
    assert np.array_equal(got[0], [1.0, 0.0])
    assert np.array_equal(got[1], [0.0, 1.0])
    assert got[2, 0] == 1.0 and np.isnan(got[2, 1])


def test_complete_drops_undefined_targets_and_targets_crossing_a_split() -> None:
    vol = np.array([[1.0, 2.0], [1.0, np.nan], [1.0, 2.0], [1.0, 2.0]])
    up = np.ones((4, 1))
    split = np.array([0, 0, 0, 1])
    last = np.array([0, 0, -1, 1])  # the third's last target bar falls in the purge gap
    assert np.array_equal(complete(vol, up, split, last), [True, False, False, True])


def test_hour_of_week_starts_on_monday() -> None:
    monday = 4 * 24 * HOUR  # 1970-01-05 00:00 UTC
    ms = np.array([0, monday, monday + 167 * HOUR, monday + 168 * HOUR])
    assert hour_of_week(ms).tolist() == [72, 0, 167, 0]


class _Train:
    """The three fields :func:`seasonal_profile` reads, for a hand-made frame."""

    def __init__(self, series: np.ndarray, target_ms: np.ndarray, y: np.ndarray) -> None:
        self.series, self.target_ms, self.y_log_volume = series, target_ms, y

    def __len__(self) -> int:
        return len(self.series)


def test_the_seasonal_profile_averages_each_hour_of_the_week_per_series() -> None:
    monday = 4 * 24 * HOUR
    ms = np.array([monday, monday + 168 * HOUR, monday + HOUR, monday])
    train = _Train(np.array([0, 0, 0, 1]), ms, np.array([1.0, 3.0, 5.0, 7.0]))
    profile = seasonal_profile(train, 2)  # type: ignore[arg-type]
    assert profile[0, 0] == 2.0 and profile[0, 1] == 5.0 and profile[1, 0] == 7.0
    assert profile[0, 2] == 3.0  # an hour never seen: the series' mean
    total = profile_sum(profile, train, 2, HOUR)  # type: ignore[arg-type]
    assert np.isclose(total[0], np.log1p(np.expm1(2.0) + np.expm1(5.0)))


def test_baseline_quantiles_shift_the_point_by_its_training_residuals() -> None:
    train_point = np.zeros(100)
    train_y = np.arange(100.0)  # residuals 0..99
    got = with_quantiles(np.array([1.0, 2.0]), train_point, train_y, [0.5, 0.9])
    assert np.allclose(got, [[1.0 + 49.5, 1.0 + 89.1], [2.0 + 49.5, 2.0 + 89.1]])


def test_pinball_loss_weighs_misses_above_by_the_level() -> None:
    y = np.array([1.0, 3.0])
    assert pinball(y, np.array([2.0, 2.0]), 0.9) == pytest.approx((0.1 * 1 + 0.9 * 1) / 2)
    assert pinball(y, np.array([2.0, 2.0]), 0.5) == pytest.approx(0.5)


def _scored(model: np.ndarray, other: np.ndarray, y: np.ndarray) -> dict:  # type: ignore[type-arg]
    boot = BlockBootstrap(np.arange(len(y)) // 10, 200, seed=1)
    return score_quantiles(y, {"model": model, "ridge": other}, boot)


def test_coverage_counts_outcomes_at_or_below_the_p90_and_is_not_paired() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=2000)
    p90 = np.full(2000, 1.2816)  # the standard normal's 90th percentile
    model = np.column_stack([np.zeros(2000), p90])
    scored = _scored(model, model + 0.5, y)
    cov = scored["models"]["model"][COVERAGE]
    assert cov["value"] == pytest.approx(np.mean(y <= 1.2816))
    assert cov["low"] < 0.9 < cov["high"]
    assert COVERAGE not in scored["paired"]["ridge"] and "pinball_90" in scored["paired"]["ridge"]
    assert set(QUANTILE_METRICS) == set(scored["models"]["model"])


def test_the_rule_promotes_only_a_better_calibrated_and_sharper_model() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=3000)
    good = np.column_stack([np.zeros(3000), np.full(3000, 1.2816)])
    worse = np.column_stack([np.full(3000, 0.6), np.full(3000, 2.5)])
    verdict = judge_horizon(6, _scored(good, worse, y), ["ridge"])
    assert verdict.passes and not verdict.failures
    wide = np.column_stack([np.zeros(3000), np.full(3000, 3.0)])  # sharp p50, p90 too high
    verdict = judge_horizon(6, _scored(wide, worse, y), ["ridge"])
    assert not verdict.passes
    assert any("coverage" in f for f in verdict.failures)


def test_samples_with_horizons_carry_sums_of_the_real_bars_inside_their_split() -> None:
    data = prepare(from_csv([DATA / "binance_BTC-USDT_1h.csv.gz"], []))
    cuts = make_cuts(data, test_days=30, validation_fraction=0.2, train_days=None, purge_bars=24)
    plain = build_samples(data, 24, cuts)
    samples = build_samples(data, 24, cuts, horizons=(1, 6, 24))
    assert 0 < len(samples) < len(plain) and samples.y_volume_sum.shape == (len(samples), 3)
    d, rows = data[0], samples.row
    assert np.allclose(samples.y_volume_sum[:, 0], samples.y_log_volume)
    six = np.array([d.volume[r + 1 : r + 7].sum() for r in rows[::97]])
    assert np.allclose(np.expm1(samples.y_volume_sum[::97, 1]), six)
    assert np.array_equal(samples.y_up_at[:, 0], samples.y_up)
    last = cuts.split_of(samples.target_ms + 23 * HOUR)
    assert np.array_equal(last, samples.split)  # no 24-bar target runs into the next split
    assert plain.y_volume_sum.shape == (len(plain), 0)


def test_without_significance_the_p50_is_judged_on_its_point_value() -> None:
    def entry(value: float) -> dict[str, float]:
        return {"value": value, "low": value - 0.01, "high": value + 0.01}

    pooled = {
        "models": {
            "model": {"mae": entry(0.300), "pinball_90": entry(0.08), COVERAGE: entry(0.9)},
            "ridge": {"mae": entry(0.301), "pinball_90": entry(0.09), COVERAGE: entry(0.88)},
        },
        "paired": {"ridge": {"mae": {**entry(-0.001), "verdict": "no difference"}}},
    }
    assert not judge_horizon(1, pooled, ["ridge"]).passes
    assert judge_horizon(1, pooled, ["ridge"], significance=False).passes
    pooled["models"]["model"]["mae"] = entry(0.302)
    assert not judge_horizon(1, pooled, ["ridge"], significance=False).passes
