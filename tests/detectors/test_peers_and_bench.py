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
