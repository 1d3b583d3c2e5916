"""One contract suite for every detector in the registry (after river's estimator checks)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from detectors.base import Detector, EventBatch, Explanation
from detectors.checkpoint import load_checkpoint, save_checkpoint
from detectors.registry import DEFAULT_DETECTOR, DETECTORS
from tests.detectors.conftest import PLANTED, TYPES

#: Settings that keep the suite fast; every other argument is the class default.
FAST: dict[str, dict[str, Any]] = {
    "ape": {"dim": 8, "epochs": 8, "batch_size": 128},
    "outrider": {"ape_weight": 0.25, "dim": 8, "epochs": 8, "batch_size": 128},
    "devnet": {
        "ape_config": {"dim": 8, "epochs": 8, "batch_size": 128},
        "epochs": 8,
        "batches_per_epoch": 5,
    },
    # without APE: rarity, pairs explained by co-occurrence counts (the service's `outrider`)
    "outrider:plain": {},
    # APE learning as a stream (what the service runs): 250-event calls, a replay window
    "ape:stream": {
        "dim": 8,
        "batch_size": 128,
        "replay_size": 1000,
        "train_steps_per_event": 0.02,
    },
}


@pytest.fixture(scope="module", params=[*sorted(DETECTORS), "ape:stream", "outrider:plain"])
def fitted(request: pytest.FixtureRequest, train: EventBatch) -> Detector:
    name, _, how = request.param.partition(":")
    det = DETECTORS[name](TYPES, **FAST.get(request.param, {}))
    step = 250 if how == "stream" else len(train)
    for s in range(0, len(train), step):
        det.learn_many(EventBatch(TYPES, train.rows[s : s + step], train.times[s : s + step]))
    return det


def test_registry_names_match_and_default_exists() -> None:
    assert DEFAULT_DETECTOR in DETECTORS
    for name, cls in DETECTORS.items():
        assert cls.name == name


def test_score_shape_and_dtype(fitted: Detector, test_batch: EventBatch) -> None:
    s = fitted.score_many(test_batch)
    assert s.shape == (len(test_batch),) and s.dtype == np.float64
    assert np.isfinite(s).all()


def test_planted_anomaly_scores_high(fitted: Detector, test_batch: EventBatch) -> None:
    normal = fitted.score_many(test_batch)
    planted = fitted.score_many(EventBatch(TYPES, [PLANTED]))[0]
    assert planted > np.quantile(normal, 0.95)


def test_unseen_entities_are_finite(fitted: Detector) -> None:
    s = fitted.score_many(EventBatch(TYPES, [("u?", "h?", "p?", "x?"), ("", "", "", "")]))
    assert np.isfinite(s).all()


def test_empty_batch(fitted: Detector) -> None:
    empty = EventBatch(TYPES, [])
    assert fitted.score_many(empty).shape == (0,)
    assert fitted.explain_many(empty) == []
    fitted.learn_many(empty)  # a no-op, must not raise


def test_wrong_entity_types_refused(fitted: Detector) -> None:
    with pytest.raises(ValueError):
        fitted.score_many(EventBatch(("a", "b", "c", "d"), [("1", "2", "3", "4")]))


def test_explain_shape(fitted: Detector, test_batch: EventBatch) -> None:
    batch = EventBatch(TYPES, [*test_batch.rows[:5], PLANTED])
    ex = fitted.explain_many(batch, top_k=2)
    assert len(ex) == len(batch)
    for e, row in zip(ex, batch.rows, strict=True):
        assert isinstance(e, Explanation)
        assert 1 <= len(e.pairs) <= 2
        assert [r.value for r in e.rarity] == list(row)
        for p in e.pairs:
            assert {p.type_a, p.type_b} <= set(TYPES) and p.type_a != p.type_b


def test_checkpoint_round_trip_identical_scores(
    fitted: Detector, test_batch: EventBatch, tmp_path: Any
) -> None:
    batch = EventBatch(TYPES, [*test_batch.rows, PLANTED, ("u?", "h?", "p?", "x?")])
    before = fitted.score_many(batch)
    path = save_checkpoint(tmp_path, "v1", {"kind": fitted})
    version, dets, _ = load_checkpoint(path)
    assert version == "v1" and type(dets["kind"]) is type(fitted)
    np.testing.assert_array_equal(dets["kind"].score_many(batch), before)


def test_state_refused_for_other_detector(fitted: Detector) -> None:
    arrays, meta = fitted.state_dict()
    other = next(c for n, c in DETECTORS.items() if n != fitted.name)
    with pytest.raises((ValueError, KeyError)):
        other.from_state(arrays, meta)


def test_peek_gives_the_scores_and_moves_no_state(fitted: Detector, test_batch: EventBatch) -> None:
    peeked = fitted.peek_many(test_batch)
    again = fitted.peek_many(test_batch)
    assert np.array_equal(peeked, again), "a peek changed what the next peek sees"
    assert np.allclose(peeked, fitted.score_many(test_batch))


@pytest.mark.parametrize(
    "weights", [{"burst_weight": 1.0, "burst_floor": 0.0}, {"context_weight": 0.5}]
)
def test_a_peek_does_not_advance_the_time_context(
    train: EventBatch, test_batch: EventBatch, weights: dict[str, float]
) -> None:
    """With time context on, scoring remembers what it scored; a what-if must not."""
    peeking, plain = (DETECTORS["outrider"](TYPES, **weights) for _ in range(2))
    for det in (peeking, plain):
        det.learn_many(train)
        det.score_many(train)
    for _ in range(3):
        peeking.peek_many(test_batch)
    assert np.array_equal(peeking.score_many(test_batch), plain.score_many(test_batch))
