from __future__ import annotations

import numpy as np
import pytest

from detectors.base import EventBatch
from detectors.feedback import (
    FeedbackDetector,
    family,
    pattern_key,
    pattern_row,
    select_queries,
)
from detectors.outrider import OutriderDetector
from tests.detectors.conftest import TYPES


def _fitted(train: EventBatch, **kw: object) -> FeedbackDetector:
    det = FeedbackDetector(TYPES, **kw)
    det.learn_many(train)
    return det


def _one(row: tuple[str, ...], t: float = 0.0) -> EventBatch:
    return EventBatch(TYPES, [row], np.array([t]))


def test_no_labels_is_the_base_ranking_and_finite(train: EventBatch, test_batch) -> None:
    det = _fitted(train)
    det.learn_labels(EventBatch(TYPES, []), np.zeros(0))
    s = det.score_many(test_batch)
    assert np.isfinite(s).all() and not det.adjustment(test_batch).any()
    base = det.base.score_many(test_batch)
    assert np.array_equal(np.argsort(s, kind="stable"), np.argsort(base, kind="stable"))


def test_benign_verdict_sinks_look_alike_on_another_host(train: EventBatch) -> None:
    det = _fitted(train)
    fp = ("user_tail1", "host_1", "process_tail3", "port_1")
    alike = ("user_tail1", "host_3", "process_tail3", "port_3")  # same pattern, other host
    other = ("user_tail7", "host_2", "process_tail9", "port_2")  # as rare, unrelated
    probe = EventBatch(TYPES, [alike, other])
    before = det.score_many(probe)
    det.learn_labels(_one(fp), [0])
    change = det.score_many(probe) - before
    assert change[0] < -0.1 and change[0] < change[1] - 0.1, change


def test_malicious_verdict_lifts_similar_unseen_group(train: EventBatch) -> None:
    det = _fitted(train, lift_weight=1.0)
    bad = ("user_tail5", "host_4", "process_tail8", "port_4")
    alike = ("user_tail5", "host_0", "process_tail8", "port_0")
    other = ("user_tail6", "host_2", "process_tail2", "port_2")
    probe = EventBatch(TYPES, [alike, other])
    before = det.score_many(probe)
    det.learn_labels(_one(bad), [1])
    change = det.score_many(probe) - before
    assert change[0] > 0.1 and change[0] > change[1] + 0.1, change


def test_time_term_lifts_events_near_a_malicious_one_elsewhere(train: EventBatch) -> None:
    det = _fitted(train, time_weight=1.0, time_other_than="host")
    det.learn_labels(_one(("user_0", "host_0", "process_0", "port_0"), 1000.0), [1])
    rows = [("user_1", "host_1", "process_1", "port_1")] * 2 + [
        ("user_0", "host_0", "process_0", "port_1")
    ]
    t = det.time_term(np.array([1010.0, 90_000.0, 1010.0]), rows)
    assert t[0] > 0.9 and t[1] < 1e-6 and t[2] == 0.0  # same host: not evidence from elsewhere


def test_a_later_verdict_or_an_undo_withdraws_the_confirmed_times(train: EventBatch) -> None:
    det = _fitted(train, time_weight=1.0, time_same="host")
    attack, other = ("user_0", "host_0", "process_0", "port_0"), ("u", "host_0", "p", "port")
    det.learn_labels(EventBatch(TYPES, [attack] * 2 + [other], np.array([1e3, 2e3, 5e4])),
                     [1, 1, 1])  # fmt: skip
    near = lambda: det.time_term(np.array([1010.0, 5e4 + 10]), [other, other])  # noqa: E731
    assert (near() > 0.9).all()
    det.learn_labels(_one(attack, 0.0), [0])  # the analyst changed their mind: benign
    assert near()[0] < 1e-3 and near()[1] > 0.9, "only the relabeled pattern's times go"
    assert det.forget(other) and not det.forget(other)
    assert not near().any() and not det.labeled_.get("\x1f".join(other))
    det.learn_labels(_one(attack, 7e4), [1])  # malicious again: its newest time only
    assert det.malicious_times_.tolist() == [7e4]
    back = FeedbackDetector.from_state(*det.state_dict())
    assert back.malicious_keys_ == det.malicious_keys_ and back.forget(attack)
    assert len(back.malicious_times_) == 0


def test_a_hostile_value_holding_the_separator_never_poses_as_two(train: EventBatch) -> None:
    plain = ("svc", "backup", "process_0", "port_0")
    # one value that reads, joined, like "svc" then "1=backup": the pair token of `plain`
    hostile = ("svc\x1f1=backup", "host_9", "process_9", "port_9")
    tricky = ("a\x1e_b", "\x1e", "\x1f\x1e\x1f", "")
    for row in (plain, hostile, tricky):
        assert pattern_row(pattern_key(row)) == row
    assert pattern_key(plain) == "\x1f".join(plain), "ordinary keys are as before"
    assert len({pattern_key(hostile), pattern_key(("svc", "1=backup", "process_9", "port_9"))}) == 2
    det = _fitted(train, sink_min_types=2)
    det.learn_labels(_one(plain), [0])  # benign: sinks look-alikes by the pair svc + backup
    assert det.pattern_term([hostile])[0] == 0.0, "the hostile value got the pair's sink"
    assert det.pattern_term([("svc", "backup", "process_5", "port_5")])[0] < 0
    det.learn_labels(_one(hostile), [0])
    assert pattern_key(hostile) in det.labeled_ and det.forget(hostile)


def test_verdicts_cancel_on_shared_tokens(train: EventBatch) -> None:
    det = _fitted(train, lift_weight=1.0)
    det.learn_labels(EventBatch(TYPES, [("u_a", "h_a", "p_x", "port_x"),
                                        ("u_b", "h_b", "p_x", "port_x")]), [1, 0])  # fmt: skip
    w = det._token_weights()
    assert w["2=p_x"] == 0.0 and w["0=u_a"] > 0 > w["0=u_b"]


def test_state_round_trip_identical_scores(train: EventBatch, test_batch) -> None:
    det = _fitted(train, time_weight=0.5, time_other_than="host", family_types=("process",))
    det.learn_labels(EventBatch(TYPES, train.rows[:4], np.arange(4.0)), [1, 0, 0, 1])
    back = FeedbackDetector.from_state(*det.state_dict())
    np.testing.assert_array_equal(back.score_many(test_batch), det.score_many(test_batch))
    assert back.rank(test_batch).order.tolist() == det.rank(test_batch).order.tolist()


def test_bad_labels_refused(train: EventBatch) -> None:
    det = _fitted(train)
    with pytest.raises(ValueError):
        det.learn_labels(_one(train.rows[0]), [2])
    with pytest.raises(ValueError):
        det.learn_labels(_one(train.rows[0]), [1, 0])
    with pytest.raises(ValueError):
        FeedbackDetector(TYPES, base="nope")


def test_rank_leaves_out_shown_groups(train: EventBatch, test_batch) -> None:
    det = _fitted(train)
    first = det.rank(test_batch)
    shown = first.order[:3].tolist()
    again = det.rank(test_batch, shown=shown)
    assert set(again.order.tolist()) == set(first.order.tolist()) - set(shown)


def test_family_and_outrider_similarity_key() -> None:
    assert family("W-Acc-400") == "W-Acc" and family("plain") == "plain"
    det = OutriderDetector(TYPES, mmr_types=("host",), family_types=("port",))
    assert det.similarity_key(("u", "h", "p", "port-22")) == ("h", "port")
    with pytest.raises(ValueError):
        OutriderDetector(TYPES, mmr_types=("nope",))


def test_select_queries_near_threshold_diverse_deterministic() -> None:
    keys = [("a", "h1"), ("a", "h1"), ("b", "h2"), ("c", "h3"), ("a", "h1"), ("z", "h9")]
    scores = np.array([5.0, 5.1, 4.9, 1.0, 9.0, 5.05])
    q = select_queries(keys, scores, k=2, threshold=5.0, exclude=[4], pool=2)
    assert q == select_queries(keys, scores, k=2, threshold=5.0, exclude=[4], pool=2)
    assert q[0] == 0 and 4 not in q and 3 not in q  # nearest first; far from threshold out
    assert keys[q[1]] != keys[q[0]]  # the twin of the first pick (group 1) is passed over
    assert select_queries(keys, scores, k=0) == [] and select_queries([], np.zeros(0)) == []


def test_burst_base_is_scored_once_and_reused(train: EventBatch, test_batch) -> None:
    det = _fitted(train, base_config={"burst_weight": 0.5}, mmr_burst=0.2, chronic_weight=0.1)
    state_after_fit = det.base.burst.state()[1]
    assert state_after_fit["clock"] == float(train.times.max())  # the fit's sample: no advance
    base = det.base.score_many(test_batch)
    first = det.score_many(test_batch, base_scores=base)
    np.testing.assert_allclose(det.score_many(test_batch, base_scores=base), first)
    ranked = det.rank(test_batch, base_scores=base)
    assert ranked.order.tolist() == det.rank(test_batch, scores=first).order.tolist()
    with pytest.raises(ValueError):
        det.score_many(test_batch, base_scores=base[:-1])


def test_entity_lift_raises_the_hosts_other_alerts_not_the_rules_look_alikes(
    train: EventBatch,
) -> None:
    det = _fitted(train, lift_weight=1.0, lift_types=("host",), sink_types=())
    bad = ("user_tail5", "host_4", "process_tail8", "port_4")
    same_host = ("user_tail6", "host_4", "process_tail2", "port_2")  # another rule, same host
    same_rule = ("user_tail5", "host_0", "process_tail8", "port_0")  # the rule elsewhere
    probe = EventBatch(TYPES, [same_host, same_rule])
    before = det.score_many(probe)
    det.learn_labels(_one(bad), [1])
    change = det.score_many(probe) - before
    assert change[0] > 0.1 and abs(change[1]) < 1e-12, change
    det.learn_labels(_one(("user_tail7", "host_2", "process_tail9", "port_2")), [0])
    assert all(v >= 0 for v in det._token_weights().values())  # nothing sinks
    with pytest.raises(ValueError):
        FeedbackDetector(TYPES, lift_types=("nope",))
