from __future__ import annotations

import numpy as np

from detectors.vocabulary import RARE, Vocabulary


def test_rare_until_min_count_then_own_id() -> None:
    voc = Vocabulary(("a", "b"), min_count=2)
    ids, fresh = voc.observe([("x", "y")])
    assert ids.tolist() == [voc.rare_ids.tolist()]  # seen once: still <rare>
    assert fresh == []
    ids, fresh = voc.observe([("x", "z")])
    assert ids[0, 0] not in voc.rare_ids and ids[0, 1] == voc.rare_ids[1]
    assert fresh == [ids[0, 0]]
    assert voc.count_of(0, "x") == 2.0 and voc.values[voc.rare_ids[0]] == RARE


def test_unseen_maps_to_type_rare() -> None:
    voc = Vocabulary(("a", "b"), min_count=1)
    voc.observe([("x", "y")])
    ids = voc.encode([("never", "y")])
    assert ids[0, 0] == voc.rare_ids[0] and ids[0, 1] != voc.rare_ids[1]


def test_eviction_keeps_the_frequent_and_recycles_ids() -> None:
    voc = Vocabulary(("a",), min_count=1, max_size=3)
    voc.observe([("common",)] * 10 + [("mid",)] * 5 + [("low",)] * 2)
    before = len(voc)
    voc.observe([("new",)] * 3)
    assert voc.size(0) == 3
    assert "low" not in voc.index[0] and {"common", "mid", "new"} <= set(voc.index[0])
    assert len(voc) == before + 1 and len(voc.free) == 1
    voc.observe([("newer",)] * 20)  # takes the freed id, evicts the next weakest
    assert len(voc) == before + 1 and "newer" in voc.index[0]
    assert voc.encode([("low",)])[0, 0] == voc.rare_ids[0]


def test_counts_decay_with_half_life() -> None:
    voc = Vocabulary(("a",), min_count=1, half_life_events=10)
    voc.observe([("old",)] * 10)
    voc.observe([("new",)] * 10)
    assert voc.count_of(0, "old") < 0.6 * 10 and voc.count_of(0, "new") > voc.count_of(0, "old")


def test_state_round_trip() -> None:
    voc = Vocabulary(("a", "b"), min_count=2, max_size=5)
    rows = [(f"v{i % 7}", f"w{i % 3}") for i in range(50)] + [("once", "w0")]
    voc.observe(rows)
    back = Vocabulary.from_state(*voc.state())
    np.testing.assert_array_equal(back.encode(rows), voc.encode(rows))
    assert back.count_of(0, "once") == voc.count_of(0, "once") == 1.0
