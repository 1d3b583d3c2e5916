"""Co-firing groups in the ranking, and verdicts that generalise locally (time, host, family)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.base import EventBatch
from detectors.feedback import FeedbackDetector
from detectors.outrider import OutriderDetector
from detectors.ranking import cofire_share, rank_groups

TYPES = ("name", "short", "ip", "host")
DAY = 86_400.0


def _warmup() -> EventBatch:
    """Background on three hosts, rules of two families each, spread over a day."""
    rows = []
    for i in range(600):
        host = ("web", "mail", "share")[i % 3]
        rule = ("W-Acc-400", "W-Aut-Pam", "A-Acc-Val")[(i // 3) % 3]
        rows.append((f"rule {rule}", rule, f"ip-{host}", host))
    return EventBatch(TYPES, rows, np.linspace(0.0, DAY, len(rows)))


def _batch(rows: list[tuple[str, ...]], times: list[float]) -> EventBatch:
    return EventBatch(TYPES, rows, np.array(times, dtype=np.float64))


def _row(rule: str, host: str) -> tuple[str, ...]:
    return (f"rule {rule}", rule, f"ip-{host}", host)


def test_cofire_share_counts_alerts_within_the_window() -> None:
    mine = np.array([0.0, 3.0, 100.0, 200.0])
    assert cofire_share(mine, np.array([1.0, 199.0]), 5.0) == 0.75
    assert cofire_share(mine, np.array([50.0]), 5.0) == 0.0
    assert cofire_share(np.zeros(0), mine, 5.0) == 0.0


def test_cofiring_group_on_the_same_host_waits_for_the_next_action() -> None:
    # one scan seen by two rules on host h (t = 0..2 s), the next step on h minutes later,
    # and a rule on another host firing in the same seconds
    rows = [("scan-a", "h"), ("scan-b", "h"), ("scan-a", "h"), ("scan-b", "h"),
            ("step2", "h"), ("other", "g")]  # fmt: skip
    times = np.array([0.0, 1.0, 2.0, 2.0, 300.0, 1.0])
    scores = np.array([10.0, 9.9, 10.0, 9.9, 9.8, 9.7])
    host = lambda k: k[1]  # noqa: E731
    plain = rank_groups(rows, times, scores, lam=2.0, bucket_s=3600.0)
    assert plain.order.tolist()[:2] == [0, 1]  # fields differ: the scan's twin comes second
    co = rank_groups(rows, times, scores, lam=2.0, bucket_s=3600.0, cofire_sim=1.5,
                     cofire_s=5.0, cofire_key=host)  # fmt: skip
    assert co.order.tolist() == [0, 3, 2, 1]  # the scan's twin after the next step
    # read groups count too: after reading the scan, its twin is last
    again = rank_groups(rows, times, scores, lam=2.0, shown=[0], cofire_sim=1.5,
                        cofire_key=host)  # fmt: skip
    assert again.order.tolist()[-1] == 1
    anyhost = rank_groups(rows, times, scores, lam=2.0, cofire_sim=1.5, cofire_s=5.0)
    assert anyhost.order.tolist()[-2:] == [1, 3]  # no key: the other host's rule co-fires too


def test_cofire_options_off_change_nothing_and_round_trip() -> None:
    warm = _warmup()
    test = _batch([_row("W-Acc-400", "web"), _row("S-Scan", "web"), _row("A-New", "web")],
                  [DAY + 10, DAY + 11, DAY + 400])  # fmt: skip
    off = OutriderDetector(TYPES)
    on = OutriderDetector(TYPES, cofire_sim=1.5, cofire_types=("host",))
    for det in (off, on):
        det.learn_many(warm)
    np.testing.assert_array_equal(off.score_many(test), on.score_many(test))
    back = OutriderDetector.from_state(*on.state_dict())
    assert back.rank(test).order.tolist() == on.rank(test).order.tolist()
    assert on.cofire_key(test.rows[0]) == ("web",) and off.cofire_key(test.rows[0]) == ()
    with pytest.raises(ValueError):
        OutriderDetector(TYPES, cofire_types=("nope",))
    with pytest.raises(ValueError):
        FeedbackDetector(TYPES, cofire_types=("nope",))


def test_time_same_lifts_the_hosts_alerts_around_the_confirmed_time_only() -> None:
    det = FeedbackDetector(TYPES, time_weight=3.0, time_scale_s=600.0, time_same="host",
                           lift_types=(), sink_types=())  # fmt: skip
    det.learn_many(_warmup())
    attack_t = DAY + 3600.0
    det.learn_labels(_batch([_row("S-Scan", "web")], [attack_t]), [1])
    probe = _batch(
        [_row("A-Aud-Com2", "web"), _row("A-Aud-Com2", "web"), _row("A-Aud-Com2", "mail")],
        [attack_t + 120.0, attack_t - 2 * DAY, attack_t + 120.0],
    )
    adj = det.adjustment(probe)
    assert adj[0] > 2.0  # same host, two minutes later: the attack's next step
    assert adj[1] < 1e-6  # same host, days before: its ordinary activity
    assert adj[2] == 0.0  # another host at the same time: not this evidence
    with pytest.raises(ValueError):
        FeedbackDetector(TYPES, time_same="host", time_other_than="host")


def test_benign_verdict_sinks_the_hosts_rule_family_not_the_rule_elsewhere() -> None:
    det = FeedbackDetector(TYPES, family_types=("short",), lift_types=(), pattern_weight=1.0,
                           sink_types=("short", "host"), sink_min_types=2)  # fmt: skip
    det.learn_many(_warmup())
    det.learn_labels(_batch([_row("A-Acc-Frq", "web")], [DAY]), [0])
    probe = _batch(
        [_row("A-Acc-Ent2", "web"),  # same host, same family (A-Acc): sinks
         _row("A-Acc-Frq", "share"),  # the same rule on another host: untouched
         _row("A-Aud-Com4", "web")],  # the host's other kind of alert: untouched
        [DAY + 10.0] * 3,
    )  # fmt: skip
    adj = det.adjustment(probe)
    assert adj[0] < -1.0 and adj[1] == 0.0 and adj[2] == 0.0, adj
    # with single tokens allowed to sink (the default), the rule elsewhere sinks too
    crude = FeedbackDetector(TYPES, family_types=("short",), lift_types=(), pattern_weight=1.0,
                             sink_types=("short", "host"))  # fmt: skip
    crude.learn_many(_warmup())
    crude.learn_labels(_batch([_row("A-Acc-Frq", "web")], [DAY]), [0])
    assert crude.adjustment(probe)[1] < 0.0


def test_local_options_round_trip_identical_scores_and_ranks() -> None:
    kw = dict(family_types=("short",), lift_types=(), pattern_weight=1.0,
              sink_types=("short", "host"), sink_min_types=2, time_weight=3.0,
              time_scale_s=600.0, time_same="host", cofire_sim=1.5, cofire_types=("host",),
              mmr_burst=0.2, chronic_weight=0.1)  # fmt: skip
    det = FeedbackDetector(TYPES, **kw)  # type: ignore[arg-type]
    det.learn_many(_warmup())
    det.learn_labels(_batch([_row("S-Scan", "web"), _row("A-Acc-Frq", "mail")],
                            [DAY + 60, DAY + 70]), [1, 0])  # fmt: skip
    rows = [_row(r, h) for r in ("A-Acc-Ent2", "S-Scan2", "W-Aut-Pam") for h in ("web", "mail")]
    test = _batch(rows, [DAY + 60 + i for i in range(len(rows))])
    back = FeedbackDetector.from_state(*det.state_dict())
    np.testing.assert_array_equal(back.score_many(test), det.score_many(test))
    assert back.rank(test, shown=[0]).order.tolist() == det.rank(test, shown=[0]).order.tolist()


def test_time_by_group_lifts_a_group_by_its_share_in_the_confirmed_hour() -> None:
    kw = dict(time_weight=3.0, time_scale_s=600.0, time_same="host", lift_types=(),
              sink_types=())  # fmt: skip
    attack_t = DAY + 3600.0
    chronic = [_row("W-All-Ids", "web")] * 10  # fires all week, once in the attack's minutes
    chronic_t = [*(attack_t - k * DAY / 2 for k in range(1, 10)), attack_t + 60.0]
    test = _batch([*chronic, _row("A-Aud-Com2", "web")], [*chronic_t, attack_t + 120.0])
    lifted = {}
    for by_group in (False, True):
        det = FeedbackDetector(TYPES, time_by_group=by_group, **kw)  # type: ignore[arg-type]
        det.learn_many(_warmup())
        before = det.rank(test).scores
        det.learn_labels(_batch([_row("S-Scan", "web")], [attack_t]), [1])
        lifted[by_group] = det.rank(test).scores - before
    assert lifted[False][0] > 2.5 and lifted[True][0] < 0.5  # one alert of ten in that hour
    assert lifted[True][1] == pytest.approx(lifted[False][1])  # one alert: its own term
    assert lifted[True][1] > 2.4  # 3 x exp(-120 / 600)


def test_cofire_key_with_several_values_matches_any_of_them() -> None:
    rows = [("a", "h1", "r1"), ("b", "h2", "r1"), ("c", "h3", "r2")]
    times = np.array([0.0, 1.0, 2.0])
    scores = np.array([10.0, 9.9, 9.8])
    ranked = rank_groups(rows, times, scores, lam=2.0, cofire_sim=1.5, cofire_s=5.0,
                         cofire_key=lambda k: (k[1], k[2]))  # fmt: skip
    assert ranked.order.tolist() == [0, 2, 1]  # b shares the rule with a, c shares nothing
