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
