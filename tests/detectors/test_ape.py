from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors.ape import APEDetector
from detectors.ape_model import APEModel
from detectors.base import EventBatch
from tests.detectors.conftest import TYPES


def test_pair_weights_start_at_one_and_stay_non_negative() -> None:
    m = APEModel(10, 4, dim=3)
    assert torch.allclose(m.pair_weights, torch.ones(6))
    with torch.no_grad():
        m.pair_raw.fill_(-50.0)
    assert (m.pair_weights >= 0).all()


def test_score_is_sum_of_pair_terms_plus_bias() -> None:
    m = APEModel(10, 3, dim=4)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    v = m.embedding(ids)
    manual = sum((v[:, i] * v[:, j]).sum(-1) for i, j in [(0, 1), (0, 2), (1, 2)]) + m.bias
    torch.testing.assert_close(m(ids), manual)


def test_nce_loss_decreases(train: EventBatch) -> None:
    det = APEDetector(TYPES, dim=8, epochs=1, batch_size=128)
    det.learn_many(EventBatch(TYPES, train.rows[:200]))  # vocabulary, barely trained
    first = det.nce_loss(train)
    for _ in range(4):
        det.learn_many(train)
    assert det.nce_loss(train) < first - 0.1


def test_cross_cluster_pair_is_blamed(train: EventBatch) -> None:
    det = APEDetector(TYPES, dim=8, epochs=8, batch_size=128)
    det.learn_many(train)
    ex = det.explain_many(EventBatch(TYPES, [("user_0", "host_0", "process_0", "port_3")]), 1)
    top = ex[0].pairs[0]
    assert "port" in (top.type_a, top.type_b) and top.contribution > 0


def test_learning_is_seeded(train: EventBatch) -> None:
    """Bit for bit on the CPU; CUDA's embedding backward adds with atomics in no fixed order,
    so there the same seed gives the same model to float32 rounding (test_gpu.py)."""
    a = APEDetector(TYPES, dim=4, epochs=1, seed=3, device="cpu")
    b = APEDetector(TYPES, dim=4, epochs=1, seed=3, device="cpu")
    a.learn_many(train)
    b.learn_many(train)
    np.testing.assert_array_equal(a.score_many(train), b.score_many(train))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_scores_match_cpu(train: EventBatch) -> None:
    cpu = APEDetector(TYPES, dim=8, epochs=2, device="cpu")
    cpu.learn_many(train)
    gpu = APEDetector.from_state(*cpu.state_dict())
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.score_many(train), cpu.score_many(train), atol=1e-4)


def _chunks(batch: EventBatch, size: int) -> list[EventBatch]:
    return [EventBatch(TYPES, batch.rows[s : s + size], batch.times[s : s + size])
            for s in range(0, len(batch), size)]  # fmt: skip


def test_streaming_trains_its_budget_after_the_first_window(train: EventBatch) -> None:
    """The first `replay_size` events train at the batch fit's rate, later ones at the budget."""
    det = APEDetector(TYPES, dim=4, epochs=2, batch_size=100, replay_size=1000,
                      train_steps_per_event=0.005, device="cpu")  # fmt: skip
    det.learn_many(EventBatch(TYPES, train.rows[:1000], train.times[:1000]))
    assert det.steps_ == 20  # 1000 events x 2 epochs / 100 per minibatch
    for chunk in _chunks(EventBatch(TYPES, train.rows[1000:], train.times[1000:]), 300):
        det.learn_many(chunk)
    assert det.steps_ == 20 + 10  # 2000 later events x 0.005, fractions carried across calls
    assert len(det._replay) == 1000  # the window holds the newest events only
    tail = det.vocab.encode(train.rows[-300:])
    held = {tuple(r) for r in det._replay.tolist()}
    assert all(tuple(r) in held for r in tail.tolist())


def test_streaming_learns_the_structure(train: EventBatch) -> None:
    """A stream trained in small calls blames the cross-cluster pair as the batch fit does."""
    det = APEDetector(TYPES, dim=8, batch_size=128, replay_size=512,
                      train_steps_per_event=0.02, device="cpu")  # fmt: skip
    before = APEDetector(TYPES, dim=8, device="cpu")
    before.learn_many(EventBatch(TYPES, train.rows[:200]))
    for chunk in _chunks(train, 250):
        det.learn_many(chunk)
    assert det.nce_loss(train) < before.nce_loss(train) - 0.1
    odd = EventBatch(TYPES, [("user_0", "host_0", "process_0", "port_3")])
    usual = EventBatch(TYPES, [("user_0", "host_0", "process_0", "port_0")])
    assert det.score_many(odd)[0] > det.score_many(usual)[0]


def test_streaming_forgets_recycled_ids() -> None:
    """An id the vocabulary recycled for a new entity leaves the replay window: training must
    not pair the new entity with the evicted one's contexts."""
    det = APEDetector(TYPES, dim=4, min_count=1, max_size=3, replay_size=1000,
                      train_steps_per_event=0.01, device="cpu")  # fmt: skip

    def learn(ports: list[str]) -> None:
        rows = [("u", "h", "p", port) for port in ports]
        det.learn_many(EventBatch(TYPES, rows, np.arange(len(rows), dtype=np.float64)))

    learn([f"port{i % 3}" for i in range(30)])
    port0 = det.vocab.index[3]["port0"]
    learn(["portX"] * 50)  # port0, the least used, is evicted; its id is free
    assert "port0" not in det.vocab.index[3] and (det._replay[:, 3] == port0).any()
    learn(["portY"] * 60)  # a new port takes the freed id
    assert det.vocab.index[3]["portY"] == port0
    rows_with_it = det._replay[det._replay[:, 3] == port0]
    assert len(rows_with_it) == 60  # portY's own events only, none of port0's


def test_the_window_stays_the_newest_events_after_ids_are_recycled() -> None:
    """Forgetting recycled ids from a full, wrapped ring keeps the window in time order: the
    events remembered next overwrite the oldest, never newer ones."""
    det = APEDetector(TYPES, replay_size=6, train_steps_per_event=0.01, device="cpu")
    rows = lambda *ts: np.array([[t, 100, 200, 300] for t in ts], np.int64)  # noqa: E731
    det._remember(rows(1, 2, 3, 4, 5, 6))
    det._remember(rows(7, 8))  # wrapped: 7 and 8 took the slots of 1 and 2
    det._forget([5])  # id 5 now names another entity
    det._remember(rows(9, 10))  # window full again: 3 goes, as the oldest
    det._remember(rows(11))
    assert sorted(det._replay[:, 0].tolist()) == [6, 7, 8, 9, 10, 11]


def test_streaming_state_round_trip_keeps_the_warm_count(train: EventBatch) -> None:
    det = APEDetector(TYPES, dim=4, replay_size=500, train_steps_per_event=0.001, device="cpu")
    det.learn_many(train)
    again = APEDetector.from_state(*det.state_dict())
    assert again.streamed_ == len(train) and again.config["train_steps_per_event"] == 0.001
    np.testing.assert_array_equal(again.score_many(train), det.score_many(train))
    steps = again.steps_
    again.learn_many(EventBatch(TYPES, train.rows[:1000], train.times[:1000]))
    assert again.steps_ == steps + 1  # the budget, not a second warm-up
