from __future__ import annotations

import numpy as np

from detectors.base import EventBatch
from detectors.devnet import DevNetDetector
from tests.detectors.conftest import TYPES

FAST = {"ape_config": {"dim": 8, "epochs": 6, "batch_size": 128}, "epochs": 10,
        "batches_per_epoch": 10, "batch_size": 128}  # fmt: skip


def _fitted(train: EventBatch) -> DevNetDetector:
    det = DevNetDetector(TYPES, **FAST)
    det.learn_many(train)
    return det


def test_no_nan_and_no_training_without_labels(train: EventBatch) -> None:
    det = _fitted(train)
    det.learn_labels(EventBatch(TYPES, []), np.zeros(0))
    assert not det.trained_
    assert np.isfinite(det.score_many(train)).all()


def test_only_benign_labels_train_without_nan(train: EventBatch) -> None:
    det = _fitted(train)
    det.learn_labels(EventBatch(TYPES, train.rows[:3]), np.zeros(3))
    assert det.trained_ and np.isfinite(det.score_many(train)).all()


def test_malicious_label_lifts_look_alikes(train: EventBatch) -> None:
    det = _fitted(train)
    bad = ("user_1", "host_1", "process_1", "port_9")
    alike = ("user_1", "host_1", "process_1", "port_8")
    before = det.score_many(EventBatch(TYPES, [alike, train.rows[0]]))
    det.learn_labels(EventBatch(TYPES, [bad]), np.array([1]))
    after = det.score_many(EventBatch(TYPES, [alike, train.rows[0]]))
    assert after[0] - before[0] > after[1] - before[1] + 1.0


def test_benign_label_sinks_look_alike(train: EventBatch) -> None:
    det = _fitted(train)
    det.learn_labels(
        EventBatch(TYPES, [("user_0", "host_9", "process_0", "port_0")]), np.array([1])
    )  # fmt: skip - some anomaly so the head is active
    fp = ("user_2", "host_2", "process_3", "port_2")
    alike = ("user_2", "host_2", "process_3", "port_4")
    controls = [r for r in train.rows if r[0] in ("user_1", "user_3")][:2]
    probe = EventBatch(TYPES, [alike, *controls])
    before = det.score_many(probe)
    det.learn_labels(EventBatch(TYPES, [fp]), np.array([0]))
    change = det.score_many(probe) - before
    assert change[0] < min(change[1:]) - 0.5, change


def test_trained_head_round_trips(train: EventBatch) -> None:
    det = _fitted(train)
    det.learn_labels(EventBatch(TYPES, [("user_0", "host_9", "process_0", "port_0")]),
                     np.array([1]))  # fmt: skip
    back = DevNetDetector.from_state(*det.state_dict())
    np.testing.assert_array_equal(back.score_many(train), det.score_many(train))


def test_the_device_is_not_written_into_the_checkpoint(train: EventBatch) -> None:
    """A GPU trainer's checkpoint must load on a CPU-only scorer: where to run is not state."""
    det = DevNetDetector(TYPES, ape_config={**FAST["ape_config"], "device": "cpu"})
    _, meta = det.state_dict()
    assert "device" not in meta["ape_config"]
    assert DevNetDetector.from_state(*det.state_dict()).base.device.type in ("cpu", "cuda")


def test_benign_similarity_is_the_share_of_equal_fields_squared(train: EventBatch) -> None:
    det = DevNetDetector(TYPES, **FAST)
    det.benign = [train.rows[0], train.rows[0], ("user_0", "host_x", "process_x", "port_x")]
    rows = [*train.rows[:50], ("new", "host_x", "new", "port_x")]
    want = [
        max(np.mean([a == b for a, b in zip(r, ben, strict=True)]) for ben in det.benign) ** 2
        for r in rows
    ]
    np.testing.assert_allclose(det.benign_similarity(rows), want)
    assert det.benign_similarity(rows)[-1] == 0.25


def test_a_pattern_counts_once_with_its_latest_verdict(train: EventBatch) -> None:
    det = _fitted(train)
    row = ("user_0", "host_9", "process_0", "port_0")
    det.learn_labels(EventBatch(TYPES, [row] * 64), np.zeros(64))  # one verdict, 64 alerts
    assert det.benign == [row] and not det.malicious
    det.learn_labels(EventBatch(TYPES, [row, train.rows[0]]), np.array([1, 0]))
    assert det.malicious == [row] and det.benign == [train.rows[0]]


def test_the_score_standardisation_moves_slowly_with_traffic(train: EventBatch) -> None:
    """One service batch (here: 200 events never seen) moves the head's z feature by its
    share of the half-life, not all the way (a storm must not jump it)."""
    det = _fitted(train)
    before = det.center_
    odd = EventBatch(TYPES, [(f"u{i}", f"h{i}", f"p{i}", f"o{i}") for i in range(200)])
    det.learn_many(odd)
    batch_median = float(np.median(det.base.score_many(odd)))
    moved = det.center_ - before
    assert 0 < abs(moved) <= 0.01 * abs(batch_median - before)  # 1 - 0.5**(200/20000)


def test_a_head_trained_off_thread_is_the_head_trained_in_place(train: EventBatch) -> None:
    """`train=False` records verdicts and leaves the head stale; its job, run on another
    thread and installed, scores exactly as the in-place training does; an undo's job starts
    from a fresh head, and the install can be undone (a rolled-back training)."""
    import threading

    bad = ("user_1", "host_1", "process_1", "port_9")
    fp = ("user_2", "host_2", "process_3", "port_2")
    verdicts = EventBatch(TYPES, [bad, fp]), np.array([1, 0])
    inline, later = _fitted(train), _fitted(train)
    inline.learn_labels(*verdicts)
    later.learn_labels(*verdicts, train=False)
    assert later.head_stale and not later.trained_ and later.malicious == [bad]
    job = later.head_job()
    worker = threading.Thread(target=job.run)
    worker.start()
    worker.join(60)
    assert not later.trained_, "the job trains a copy: the detector is untouched until install"
    undo = later.install(job)
    assert later.trained_ and not later.head_stale
    probe = EventBatch(TYPES, [bad, fp, *train.rows[:5]])
    assert np.allclose(later.score_many(probe), inline.score_many(probe))
    undo()
    assert not later.trained_ and not later.head_stale, "refused: not retrained until told more"

    assert inline.forget(bad, train=False) and inline.head_stale
    fresh = inline.head_job()
    assert fresh.fresh and fresh.labels == frozenset({(fp, 0)})
    inline.install(fresh.run())
    again = _fitted(train)
    again.learn_labels(EventBatch(TYPES, [fp]), np.array([0]))
    assert np.allclose(inline.score_many(probe), again.score_many(probe))
