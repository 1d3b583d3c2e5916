"""Burst context (detectors/context.py) and the burst-aware group ranking it feeds."""

from __future__ import annotations

import numpy as np

from detectors.base import EventBatch
from detectors.context import BurstContext
from detectors.outrider import OutriderDetector
from detectors.ranking import rank_groups


def _history() -> tuple[list[tuple[str]], np.ndarray]:
    """200 ten-minute windows: 'chronic' fires 1-30 times in every window, 'quiet' 2 times in
    each of 4 windows."""
    rng = np.random.default_rng(0)
    rows: list[tuple[str]] = []
    times: list[float] = []
    for w in range(200):
        k = int(rng.integers(1, 31))
        rows += [("chronic",)] * k
        times += list(w * 600.0 + np.linspace(0, 500, k))
        if w in (10, 60, 110, 160):
            rows += [("quiet",)] * 2
            times += [w * 600.0 + 1.0, w * 600.0 + 2.0]
    return rows, np.array(times)


def test_burst_beyond_own_history_scores_high_chronic_burst_does_not() -> None:
    ctx = BurstContext(600.0)
    ctx.observe(*_history())
    t = 200 * 600.0
    chronic = ctx.observe([("chronic",)] * 25, t + np.arange(25.0))
    usual_quiet = ctx.observe([("quiet",)] * 2, t + 700 + np.arange(2.0))
    burst_quiet = ctx.observe([("quiet",)] * 9, t + 1400 + np.arange(9.0))
    novel = ctx.observe([("never",)], np.array([t + 2100.0]))
    assert chronic.max() < 2.0  # bursts of 25 happen in this stream
    assert usual_quiet.max() < burst_quiet.max()  # 9 at once: beyond anything in its past
    assert burst_quiet.max() > 5.0 and novel[0] >= burst_quiet.max() - 1e-9
    assert np.all(np.diff(burst_quiet) >= 0)  # the window's count grows, so does surprise


def test_burst_state_round_trip_continues_identically() -> None:
    ctx = BurstContext(600.0)
    ctx.observe(*_history())
    back = BurstContext.from_state(*ctx.state())
    rows = [("quiet",)] * 5 + [("chronic",)] * 3 + [("new",)]
    times = 200 * 600.0 + np.arange(9.0)
    np.testing.assert_allclose(back.observe(rows, times), ctx.observe(rows, times))


def test_chronic_weight_demotes_a_group_firing_all_day() -> None:
    rows = [("all-day",)] * 48 + [("once",)]
    times = np.concatenate([np.arange(48) * 1800.0, [3600.0]])
    scores = np.concatenate([np.full(48, 5.0), [4.9]])
    plain = rank_groups(rows, times, scores, lam=0.0)
    assert plain.order.tolist() == [0, 1]
    demoted = rank_groups(rows, times, scores, lam=0.0, chronic_weight=0.1)
    assert demoted.order.tolist() == [1, 0]


def test_burst_similarity_spreads_one_burst_across_hosts() -> None:
    # a scan: three groups with nothing in common but the minute; a fourth group elsewhere
    rows = [("scan-a", "h1"), ("scan-b", "h2"), ("scan-c", "h3"), ("other", "h4")]
    times = np.array([0.0, 10.0, 20.0, 7200.0])
    scores = np.array([10.0, 9.9, 9.8, 9.5])
    assert rank_groups(rows, times, scores, lam=5.0).order.tolist() == [0, 1, 2, 3]
    spread = rank_groups(rows, times, scores, lam=5.0, burst_sim=0.5)
    assert spread.order.tolist()[:2] == [0, 3]


def test_outrider_burst_options_change_nothing_when_off_and_round_trip_when_on() -> None:
    rows, times = _history()
    types = ("pattern", "host")
    fit = EventBatch(types, [(r[0], "h") for r in rows], times)
    test_rows = [("quiet", "h")] * 9 + [("chronic", "h")] * 5
    test = EventBatch(types, test_rows, 200 * 600.0 + np.arange(14.0))
    off = OutriderDetector(types)
    off.learn_many(fit)
    np.testing.assert_allclose(off.score_many(test), off.surprisal(test))
    on = OutriderDetector(types, burst_weight=0.5, chronic_weight=0.1, mmr_burst=0.2)
    on.learn_many(fit)
    back = OutriderDetector.from_state(*on.state_dict())
    s_on, s_back = on.score_many(test), back.score_many(test)
    np.testing.assert_allclose(s_on, s_back)
    assert s_on[8] > off.score_many(test)[8]  # the quiet pattern's burst of 9 is lifted
    np.testing.assert_allclose(s_on[9:], off.score_many(test)[9:])  # chronic: no lift
    assert on.rank(test, s_on).order.tolist() == back.rank(test, s_back).order.tolist()


def test_what_if_scoring_leaves_the_burst_state_unchanged() -> None:
    ctx = BurstContext(600.0)
    ctx.observe(*_history())
    rows = [("quiet",)] * 9
    times = 200 * 600.0 + np.arange(9.0)
    before = ctx.state()
    peek = ctx.observe(rows, times, update=False)
    after = ctx.state()
    assert before[1] == after[1]
    for k, v in before[0].items():
        np.testing.assert_array_equal(v, after[0][k])
    np.testing.assert_allclose(peek, ctx.observe(rows, times))  # same scores, now remembered
    assert ctx.open["quiet"] == (200, 9)  # remembered: the window holds the 9


def test_time_contexts_are_bounded_and_keep_the_recent_patterns() -> None:
    """A pattern per new address, forever: both contexts stay under their bound, the pattern
    that keeps firing is remembered (a burst of it still measured against its own past), and
    a long-gone one scores as never seen again; the bound survives a checkpoint."""
    from detectors.context import RateContext

    burst, rate = BurstContext(60.0, max_patterns=300), RateContext(60.0, max_patterns=300)
    for k in range(40):  # 40 minutes: a steady pattern, and 100 one-off addresses a minute
        rows = [("steady", "web")] * 5 + [("scan", f"10.0.{k}.{i}") for i in range(100)]
        times = k * 60.0 + np.linspace(0, 59, len(rows))
        burst.observe(rows, times)
        rate.observe(rows, times)
        assert len(burst.open) <= 300 and len(rate.total) <= 300
    assert "steady\x1fweb" in burst.hist and "steady\x1fweb" in rate.total
    later = 40 * 60.0 + np.arange(2.0)
    gone, steady = burst.observe([("scan", "10.0.0.1"), ("steady", "web")], later, update=False)
    new_ = burst.observe([("never", "seen")], later[:1], update=False)[0]
    assert gone == new_ > steady  # forgotten: as surprising as the never seen
    again = BurstContext.from_state(*burst.state())
    assert again.max_patterns == 300
    assert RateContext.from_state(*rate.state()).max_patterns == 300
