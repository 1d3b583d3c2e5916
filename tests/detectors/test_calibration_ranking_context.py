from __future__ import annotations

import numpy as np
import pytest

from detectors.calibration import QuantileCalibrator
from detectors.context import RateContext, poisson_surprise
from detectors.ranking import rank_groups


def test_percentile_is_monotone_and_bounded() -> None:
    cal = QuantileCalibrator(size=500, seed=1)
    cal.update(np.random.default_rng(0).normal(size=5000))
    x = np.linspace(-5, 5, 101)
    p = cal.percentile(x)
    assert (np.diff(p) >= 0).all() and p[0] == 0.0 and p[-1] == 100.0
    assert cal.severity(np.array([10.0, 96.0, 99.5, 99.95])) == ["low", "medium", "high",
                                                                   "critical"]  # fmt: skip
    # each cut belongs to its severity; a batch at once; NaN (never an alert's) is low
    cuts = np.array([0.0, 94.99, 95.0, 99.0, 99.9, 100.0, np.nan])
    assert cal.severity(cuts) == ["low", "low", "medium", "high", "critical", "critical", "low"]
    assert cal.severity(np.array([])) == []


def test_calibrator_state_round_trip_and_reservoir_bounded() -> None:
    cal = QuantileCalibrator(size=100)
    cal.update(np.arange(1000.0))
    assert len(cal.reservoir) == 100 and cal.seen == 1000
    back = QuantileCalibrator.from_state(*cal.state())
    np.testing.assert_array_equal(back.percentile(np.arange(0, 1000, 7.0)),
                                  cal.percentile(np.arange(0, 1000, 7.0)))  # fmt: skip
    with pytest.raises(ValueError):
        QuantileCalibrator.from_state({"reservoir": np.zeros(3)}, {"calibrator": "other"})


def test_percentiles_follow_the_model_as_it_learns() -> None:
    """A young model scores everything high; once it has learned, its scores are lower. The
    sample must be recent: kept from all history, the young scores held the tail (the 99th
    percentile) long after, and the mature model's unusual scores never reached it."""
    rng = np.random.default_rng(0)
    cal = QuantileCalibrator(size=10_000, seed=0)
    cal.update(rng.normal(5.0, 1.0, size=20_000))  # young: everything is new
    for _ in range(40):  # mature: 200,000 scores in batches, as the service calibrates
        cal.update(rng.normal(0.0, 1.0, size=5_000))
    assert cal.percentile(np.array([3.0]))[0] > 99.5  # 99.87 in N(0, 1); ~91 in all history
    assert (cal.reservoir > 3.5).mean() < 0.002  # the young scores are gone from the sample
    assert cal.seen == 220_000 and len(cal.reservoir) == 10_000


def test_poisson_surprise_grows_with_count_and_rarity() -> None:
    s = poisson_surprise(np.array([1, 5, 5]), np.array([1.0, 1.0, 0.1]))
    assert s[0] < s[1] < s[2] and np.isfinite(s).all()
    assert np.isfinite(poisson_surprise(np.array([500]), np.array([1e-6]))).all()


def test_burst_of_quiet_pattern_is_surprising() -> None:
    ctx = RateContext(window_s=600)
    rows = [("steady",)] * 100 + [("quiet",)]
    times = np.concatenate([np.arange(100) * 600.0, [5.0]])
    ctx.observe(rows, times)
    steady = ctx.observe([("steady",)], np.array([61_000.0]))
    burst = ctx.observe([("quiet",)] * 10, np.full(10, 61_000.0))
    assert burst[-1] > 5 * steady[0]
    back = RateContext.from_state(*ctx.state())
    np.testing.assert_allclose(back.observe([("quiet",)], np.array([61_010.0])),
                               ctx.observe([("quiet",)], np.array([61_010.0])))  # fmt: skip


def test_ranking_by_max_score_then_mmr_diversifies() -> None:
    rows = [("scan", "h1"), ("scan2", "h1"), ("scan3", "h1"), ("other", "h2")]
    times = np.zeros(4)
    scores = np.array([10.0, 9.9, 9.8, 9.7])
    plain = rank_groups(rows, times, scores, lam=0.0)
    assert plain.order.tolist() == [0, 1, 2, 3]
    diverse = rank_groups(rows, times, scores, lam=5.0)
    assert diverse.order.tolist()[:2] == [0, 3]
    grouped = rank_groups([("a",), ("a",), ("b",)], np.zeros(3), np.array([1.0, 5.0, 2.0]))
    assert grouped.scores.tolist() == [5.0, 2.0] and grouped.group_of.tolist() == [0, 0, 1]
