"""Held-back learning: traffic is learned late, and a pattern that alerts is not learned from
its own burst (service/holdback.py), so an attack does not teach the model it is normal."""

from __future__ import annotations

import numpy as np

from detectors.base import EventBatch
from service.holdback import HoldBack

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
