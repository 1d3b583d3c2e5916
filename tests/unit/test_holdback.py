"""Held-back learning: traffic is learned late, and a pattern that alerts is not learned from
its own burst (service/holdback.py), so an attack does not teach the model it is normal."""

from __future__ import annotations

from operator import itemgetter

import numpy as np

from detectors.base import EventBatch
from service.holdback import MAX_EARLIER_EPISODES, HoldBack

TYPES = ("name", "host")


def _batch(rows: list[tuple[str, str]], start: float) -> EventBatch:
    return EventBatch(TYPES, rows, np.arange(len(rows), dtype=np.float64) + start)


def _push(hold: HoldBack, batch: EventBatch, alerted: list[int] = ()) -> None:  # type: ignore[assignment]
    flagged = np.zeros(len(batch), dtype=bool)
    flagged[list(alerted)] = True
    hold.push(batch, np.zeros(len(batch)), flagged, ~flagged)


def test_nothing_is_learned_before_the_delay_then_everything_in_order() -> None:
    hold = HoldBack(delay_s=100, max_events=10_000)
    _push(hold, _batch([("a", "h")] * 10, start=0))
    assert list(hold.ready()) == []
    _push(hold, _batch([("b", "h")] * 10, start=200))
    (released,) = list(hold.ready())
    events, scores = released
    assert events.rows == [("a", "h")] * 10 and len(scores) == 10
    assert hold.held == 10, "the second batch waits"


def test_a_pattern_that_alerts_is_not_learned_from_its_burst() -> None:
    hold = HoldBack(delay_s=100, max_events=10_000)
    burst = [("scan", "web")] * 5 + [("ok", "web")] * 5
    _push(hold, _batch(burst, start=0))  # under the threshold: learnable for now
    _push(hold, _batch([("scan", "web")] * 3, start=50), alerted=[2])  # then it alerts
    _push(hold, _batch([("ok", "web")], start=1000))
    learned = [r for events, _ in hold.ready() for r in events.rows]
    assert ("scan", "web") not in learned, "the burst that alerted is not learned"
    assert learned.count(("ok", "web")) == 5


def test_memory_is_bounded_by_learning_the_oldest_early() -> None:
    hold = HoldBack(delay_s=1e9, max_events=25)
    for k in range(5):
        _push(hold, _batch([(f"v{k}", "h")] * 10, start=k * 10))
    learned = [events for events, _ in hold.ready()]
    assert sum(len(e) for e in learned) == 30 and hold.held == 20


def test_no_delay_learns_at_once_what_did_not_alert() -> None:
    hold = HoldBack(delay_s=0, max_events=10_000)
    _push(hold, _batch([("a", "h"), ("odd", "x"), ("a", "h")], start=0), alerted=[1])
    ((events, _),) = list(hold.ready())
    assert events.rows == [("a", "h"), ("a", "h")]


def test_an_alert_far_ahead_in_event_time_does_not_block_learning() -> None:
    """Partitions are read at different paces: one far ahead alerting on a pattern must not
    keep another partition's old, quiet events of that pattern from ever being learned."""
    hold = HoldBack(delay_s=100, max_events=10_000)
    _push(hold, _batch([("p", "h")] * 3, start=5000), alerted=[0, 1, 2])  # partition A, ahead
    _push(hold, _batch([("p", "h")] * 4, start=0))  # partition B: the same pattern, long ago
    learned = [r for events, _ in hold.ready() for r in events.rows]
    assert learned.count(("p", "h")) == 4


def test_only_the_first_window_of_an_alert_episode_is_kept_from_learning() -> None:
    """A pattern that alerts now and then for hours: its quiet events near the episode's
    start are not learned (the burst), later quiet ones are (it is part of normal now)."""
    hold = HoldBack(delay_s=100, max_events=10_000)
    for start in range(0, 1000, 50):  # alerts every 50 s: one long episode from t=0
        _push(hold, _batch([("p", "h"), ("p", "h")], start=float(start)), alerted=[0])
    _push(hold, _batch([("q", "h")], start=5000.0))
    times = sorted(
        t
        for events, _ in hold.ready()
        for r, t in zip(events.rows, events.times.tolist(), strict=True)
        if r == ("p", "h")
    )
    assert times and min(times) > 100, "nothing from the episode's first window"
    assert len(times) == len([s for s in range(0, 1000, 50) if s + 1 > 100])


def _push_from(
    hold: HoldBack, rows: list[tuple[str, str]], start: float, source: int, alerted=()
) -> None:  # type: ignore[assignment]
    batch = _batch(rows, start)
    flagged = np.zeros(len(batch), dtype=bool)
    flagged[list(alerted)] = True
    hold.push(batch, np.zeros(len(batch)), flagged, ~flagged, np.full(len(batch), source))


def test_each_partition_keeps_its_own_clock() -> None:
    """A backlog read partition by partition: the partition ahead in event time must not make
    the held events of the one behind due (they would be learned before their burst alerts)."""
    hold = HoldBack(delay_s=100, max_events=10_000, clock=lambda: 0.0)
    _push_from(hold, [("scan", "web")] * 5, start=0, source=1)  # behind, under the threshold
    _push_from(hold, [("ok", "db")] * 5, start=90_000, source=0)  # a day ahead
    assert [r for e, _ in hold.ready() for r in e.rows] == [], "nothing is due by its own clock"
    _push_from(hold, [("scan", "web")] * 3, start=50, source=1, alerted=[0])  # now it alerts
    _push_from(hold, [("ok", "web")], start=1000, source=1)
    _push_from(hold, [("ok", "db")], start=91_000, source=0)
    learned = [r for e, _ in hold.ready() for r in e.rows]
    assert ("scan", "web") not in learned, "the burst that alerted behind is not learned"
    assert learned.count(("ok", "db")) == 5


def test_a_batch_mixing_partitions_is_held_per_partition() -> None:
    hold = HoldBack(delay_s=100, max_events=10_000, clock=lambda: 0.0)
    rows = [("a", "h")] * 4
    batch = EventBatch(TYPES, rows, np.array([0.0, 5000.0, 1.0, 5001.0]))
    hold.push(batch, np.arange(4.0), np.zeros(4, bool), np.ones(4, bool), np.array([1, 0, 1, 0]))
    assert [list(s) for _, s in hold.ready()] == [], "partition 0's clock does not release 1"
    _push_from(hold, [("b", "h")], start=500, source=1)
    ((events, scores),) = list(hold.ready())
    assert events.times.tolist() == [0.0, 1.0] and scores.tolist() == [0.0, 2.0]


def test_alert_episodes_of_partitions_hours_apart_are_both_kept() -> None:
    """The same pattern alerting in two partitions a day apart in event time: each episode
    keeps its own burst from being learned (one episode per pattern let them overwrite each
    other, and the burst behind was learned)."""
    hold = HoldBack(delay_s=100, max_events=10_000, clock=lambda: 0.0)
    _push_from(hold, [("p", "h")] * 3, start=0, source=1, alerted=[0])
    _push_from(hold, [("p", "h")] * 3, start=90_000, source=0, alerted=[0])
    _push_from(hold, [("p", "h")] * 3, start=10, source=1)  # behind: in its episode's window
    _push_from(hold, [("p", "h")] * 3, start=90_010, source=0)  # ahead: in its own
    _push_from(hold, [("q", "h")], start=5000, source=1)
    _push_from(hold, [("q", "h")], start=95_000, source=0)
    learned = [r for e, _ in hold.ready() for r in e.rows]
    assert ("p", "h") not in learned and learned.count(("q", "h")) == 0


def test_a_quiet_partition_is_released_by_the_wall_clock() -> None:
    now = [0.0]
    hold = HoldBack(delay_s=100, max_events=10_000, clock=lambda: now[0])
    _push_from(hold, [("a", "h")] * 3, start=0, source=1)  # then partition 1 goes quiet
    assert list(hold.ready()) == []
    now[0] = 99.0
    assert list(hold.ready()) == []
    now[0] = 101.0
    ((events, _),) = list(hold.ready())
    assert len(events) == 3 and hold.held == 0


def test_earlier_episodes_filter_as_one_event_at_a_time_would() -> None:
    """The per-pattern, vectorised filter of earlier episodes keeps exactly the events the
    plain definition keeps: those farther than the delay from every earlier episode's start."""
    rng = np.random.default_rng(7)
    hold = HoldBack(delay_s=50, max_events=10_000, clock=lambda: 0.0)
    patterns = [(f"p{i}", "h") for i in range(6)]
    for row in patterns[:5]:  # up to 4 earlier episodes each, 1,000 s apart
        for start in rng.choice(np.arange(0, 10_000, 1000), size=rng.integers(1, 5), replace=False):
            hold.earlier.setdefault(row, []).append((float(start), float(start) + 20))
    rows = [patterns[k] for k in rng.integers(len(patterns), size=3000).tolist()]
    batch = EventBatch(TYPES, rows, rng.uniform(0, 10_000, size=3000))
    keep = np.flatnonzero(rng.random(3000) < 0.8)
    expected = [
        i
        for i in keep.tolist()
        if rows[i] not in hold.earlier
        or all(abs(batch.times[i] - s) > 50 for s, _ in hold.earlier[rows[i]])
    ]
    got = hold._outside_earlier(batch, keep)
    assert got.tolist() == expected and 0 < len(expected) < len(keep)


def _calibrated(hold: HoldBack) -> np.ndarray:
    """The scores the calibration would learn from what the hold-back releases."""
    return np.concatenate([scores for _, scores in hold.ready(everything=True)])


def test_a_flood_is_calibrated_on_only_up_to_its_cap() -> None:
    hold = HoldBack(delay_s=100, max_events=10_000, flood_cap=3)
    rows = [("scan", "web")] * 10 + [("ok", "web")] * 5
    flagged = np.array([True] * 10 + [False] * 5)
    assert hold.push(_batch(rows, start=0), np.arange(15.0), flagged, ~flagged) == 7
    scores = _calibrated(hold)
    assert np.isfinite(scores[:3]).all(), "an episode's first alerts are calibrated on"
    assert np.isnan(scores[3:10]).all(), "the rest of the flood is not"
    assert np.isfinite(scores[10:]).all(), "traffic that did not alert always is"
    # a later episode of the same pattern counts afresh; so does another pattern
    later = [("scan", "web")] * 4 + [("probe", "db")] * 4
    hold.push(_batch(later, start=10_000), np.arange(8.0), np.ones(8, bool), np.zeros(8, bool))
    assert np.isfinite(_calibrated(hold)).sum() == 6


def test_without_a_cap_every_score_is_calibrated_on() -> None:
    hold = HoldBack(delay_s=100, max_events=10_000)
    flagged = np.ones(50, dtype=bool)
    hold.push(_batch([("scan", "web")] * 50, start=0), np.ones(50), flagged, ~flagged)
    assert np.isfinite(_calibrated(hold)).all()


def _flag_one(hold: HoldBack, row: tuple[str, ...], t: float) -> float:
    """The hold-back's alert-by-alert episode bookkeeping as it was before
    `_remember_alerts`: the reference it must agree with. Returns the episode's start."""
    start, last = hold.flagged.get(row, (-np.inf, -np.inf))
    if abs(t - last) <= hold.delay_s:
        if t > last:
            hold.flagged[row] = (start, t)
        return start
    others = hold.earlier.get(row)
    for k, (s, e) in enumerate(others or ()):
        if abs(t - e) <= hold.delay_s or s <= t <= e:
            if t > e:
                others[k] = (s, t)  # type: ignore[index]
            return s
    if last > -np.inf:
        others = hold.earlier.setdefault(row, [])
        others.append((start, last))
        if len(others) > MAX_EARLIER_EPISODES:
            others.remove(min(others, key=itemgetter(1)))
    hold.flagged[row] = (t, t)
    return t


def test_alerts_are_remembered_as_one_at_a_time_would() -> None:
    """`_remember_alerts` (pattern by pattern, newest episode inline) against the reference
    called alert by alert in batch order, over random batches of a few patterns."""
    rng = np.random.default_rng(7)
    fast = HoldBack(delay_s=100, max_events=10**6, flood_cap=3)
    slow = HoldBack(delay_s=100, max_events=10**6, flood_cap=3)
    t0 = 0.0
    for _ in range(60):
        n = int(rng.integers(1, 40))
        rows = [("p", str(rng.integers(0, 4))) for _ in range(n)]
        times = t0 + rng.choice([0.0, 30.0, 90.0, 250.0, -150.0], n).cumsum() * rng.random()
        t0 = float(times.max()) + float(rng.choice([0.0, 500.0]))
        batch = EventBatch(TYPES, rows, times)
        alerted = sorted(rng.choice(n, int(rng.integers(0, n + 1)), replace=False).tolist())
        got = fast._remember_alerts(batch, alerted)
        want = np.zeros(n, dtype=bool)
        for i in alerted:
            key = (rows[i], _flag_one(slow, rows[i], float(times[i])))
            slow.alerts_in[key] = slow.alerts_in.get(key, 0) + 1
            want[i] = slow.alerts_in[key] > 3
        assert np.array_equal(np.zeros(n, bool) if got is None else got, want)
        assert (fast.flagged, fast.earlier, fast.alerts_in) == (
            slow.flagged,
            slow.earlier,
            slow.alerts_in,
        )
