from __future__ import annotations

import numpy as np

from bench import ait
from detectors.base import EventBatch
from detectors.outrider import OutriderDetector
from detectors.peers import HalfSpaceTreesOneHot, IsolationForestOneHot, ZeroPlusPlus
from tests.detectors.conftest import PLANTED, TYPES


def test_peers_rank_planted_anomaly_high(train: EventBatch, test_batch: EventBatch) -> None:
    for cls in (ZeroPlusPlus, IsolationForestOneHot, HalfSpaceTreesOneHot):
        det = cls(TYPES)
        det.learn_many(EventBatch(TYPES, train.rows[:1000]))
        normal = det.score_many(test_batch)
        planted = det.score_many(EventBatch(TYPES, [PLANTED]))[0]
        assert planted >= np.quantile(normal, 0.9), cls.name


def test_outrider_counts_only_matches_frequency_ranking(train: EventBatch) -> None:
    from detectors.frequency import FrequencyDetector

    a, b = OutriderDetector(TYPES, min_count=1), FrequencyDetector(TYPES)
    a.learn_many(train)
    b.learn_many(train)
    x = EventBatch(TYPES, [*train.rows[:300], PLANTED])
    assert np.corrcoef(a.score_many(x), b.score_many(x))[0, 1] > 0.99


def test_groups_to_see_and_fewest_possible() -> None:
    groups = np.array([0, 0, 1, 2, 3, 3])
    steps = ["a", "-", "b", "-", "c", "a"]
    assert ait.groups_to_see([2, 3, 1, 0], groups, steps) == [2, 2, 3]
    assert ait.min_groups_to_cover(groups, steps) == 2


def test_frequency_counts_repetitive_and_distinct_batches_alike(train: EventBatch) -> None:
    """learn_many counts a repetitive batch row by distinct row: the counts must be those of
    counting every event, whichever way a batch is counted."""
    from detectors.frequency import FrequencyDetector

    # 50 distinct rows in 1,000, as lists: the contract takes any sequence of values
    repetitive = EventBatch(TYPES, [list(row) for row in train.rows[:50]] * 20)
    distinct = EventBatch(TYPES, [(f"u{i}", *train.rows[i][1:]) for i in range(400)])
    det = FrequencyDetector(TYPES)
    for batch in (repetitive, distinct):
        det.learn_many(batch)
    expected = FrequencyDetector(TYPES)
    for row in [*repetitive.rows, *distinct.rows]:  # one event per batch: counted one by one
        expected.learn_many(EventBatch(TYPES, [row]))
    assert det.counts_ == expected.counts_ and det.pair_counts_ == expected.pair_counts_
    assert det.events_seen_ == expected.events_seen_ == 1400


def test_frequency_blames_common_values_never_seen_together() -> None:
    """The explanation names the two values that do not belong together (each common, never
    in one event), not a rare value with its usual companion, and counts what it says."""
    from detectors.frequency import FrequencyDetector

    types = ("code", "name", "host")
    rows = [("ssh", "sshd login", f"h{i % 2}") for i in range(400)]  # ssh on h0 and h1 only
    rows += [("web", "http 404", "h2")] * 400 + [("rare", "rare name", "h2")] * 2
    det = FrequencyDetector(types)
    det.learn_many(EventBatch(types, rows))
    (ex,) = det.explain_many(EventBatch(types, [("ssh", "sshd login", "h2")]), top_k=3)
    blamed = [(p.type_a, p.type_b) for p in ex.pairs if p.contribution > 0]
    assert blamed == [("code", "host"), ("name", "host")]  # ssh / sshd login on h2: new
    assert [p.together for p in ex.pairs] == [0.0, 0.0, 400.0]
    assert ex.pairs[2].contribution == 0.0  # code with its own name: as often as chance, or more
    assert abs(sum(p.contribution for p in ex.pairs) - 1.0) < 1e-9
    (rare,) = det.explain_many(EventBatch(types, [("rare", "rare name", "h2")]), top_k=3)
    assert all(p.contribution == 0.0 for p in rare.pairs)  # rare, but with its usual company
    assert [r.count for r in rare.rarity] == [2.0, 2.0, 402.0]


def test_frequency_memory_is_bounded_and_keeps_what_recurs() -> None:
    """Endless new addresses: every table stays under its bound, the values and pairs that
    recur stay counted, and the state keeps the bounds."""
    from detectors.frequency import FrequencyDetector

    types = ("code", "ip", "host")
    det = FrequencyDetector(types, max_values=500, max_pairs=800)
    for k in range(20):
        rows = [("ssh", f"10.{k}.{i // 250}.{i % 250}", f"h{i % 3}") for i in range(1000)]
        det.learn_many(EventBatch(types, rows))
        assert all(len(c) <= 500 for c in det.counts_)
        assert all(len(c) <= 800 for c in det.pair_counts_)
    assert det.counts_[0]["ssh"] == 20_000 and det.counts_[2]["h0"] > 6000
    assert det.pair_counts_[0][("ssh", "10.19.3.249")] == 1  # the newest stay
    assert det.pair_counts_[1][("ssh", "h1")] > 6000  # (code, host)
    usual, new = det.score_many(EventBatch(types, [("ssh", "10.19.3.249", "h0"),
                                                   ("telnet", "10.0.0.0", "h9")]))  # fmt: skip
    assert usual < new
    again = FrequencyDetector.from_state(*det.state_dict())
    assert (again.max_values, again.max_pairs) == (500, 800)


def test_plain_outrider_explains_pairs_by_counts_not_untrained_embeddings(
    train: EventBatch,
) -> None:
    """Without APE (weight 0) its embeddings never train, so the pairs come from
    co-occurrence counts: the cross-cluster port is blamed, a usual event blames nothing;
    and the counts survive a checkpoint."""
    det = OutriderDetector(TYPES)
    det.learn_many(train)
    odd, usual = det.explain_many(EventBatch(TYPES, [("user_0", "host_0", "process_0", "port_3"),
                                                     ("user_0", "host_0", "process_0",
                                                      "port_0")]))  # fmt: skip
    assert all("port" in (p.type_a, p.type_b) for p in odd.pairs if p.contribution > 0)
    assert odd.pairs[0].contribution > 0 and odd.pairs[0].together == 0.0
    assert all(p.contribution == 0.0 for p in usual.pairs)
    again = OutriderDetector.from_state(*det.state_dict())
    assert again.explain_many(EventBatch(TYPES, [("user_0", "host_0", "process_0",
                                                  "port_3")]))[0] == odd  # fmt: skip
