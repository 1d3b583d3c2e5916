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
