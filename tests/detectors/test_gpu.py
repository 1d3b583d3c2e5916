"""The neural detectors on CUDA: the same scores as on the CPU, training there, checkpoints that
cross devices both ways (a GPU trainer feeds CPU scorers). Skipped without a CUDA device: CI has
none; on a GPU machine `pytest tests/detectors` runs these and the whole contract suite on CUDA,
which is every detector's default device there."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import detectors.ape as ape_module
from detectors.ape import APEDetector
from detectors.base import Detector, EventBatch
from detectors.registry import DETECTORS
from tests.detectors.conftest import PLANTED, TYPES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SMALL = {"dim": 8, "epochs": 4, "batch_size": 128}
NEURAL = ("ape", "outrider", "devnet")


def build(name: str, device: str) -> Detector:
    if name == "devnet":
        ape_config = {**SMALL, "device": device}
        return DETECTORS[name](TYPES, ape_config=ape_config, epochs=4, batches_per_epoch=5)
    extra: dict[str, Any] = {"ape_weight": 0.25} if name == "outrider" else {}
    return DETECTORS[name](TYPES, **SMALL, **extra, device=device)


def device_of(det: Detector) -> str:
    ape = getattr(det, "ape", None) or getattr(det, "base", None) or det
    return ape.device.type  # type: ignore[attr-defined]


def probe(test_batch: EventBatch) -> EventBatch:
    return EventBatch(TYPES, [*test_batch.rows, PLANTED, ("u?", "h?", "p?", "x?")])


@pytest.mark.parametrize("name", NEURAL)
def test_a_cpu_checkpoint_scores_the_same_on_cuda(
    name: str, train: EventBatch, test_batch: EventBatch
) -> None:
    cpu = build(name, "cpu")
    cpu.learn_many(train)
    gpu = DETECTORS[name].from_state(*cpu.state_dict())
    assert device_of(cpu) == "cpu" and device_of(gpu) == "cuda"
    batch = probe(test_batch)
    np.testing.assert_allclose(gpu.score_many(batch), cpu.score_many(batch), rtol=1e-5, atol=1e-4)
    top_gpu = [(e.pairs[0].type_a, e.pairs[0].type_b) for e in gpu.explain_many(batch, 1)]
    top_cpu = [(e.pairs[0].type_a, e.pairs[0].type_b) for e in cpu.explain_many(batch, 1)]
    assert np.mean([a == b for a, b in zip(top_gpu, top_cpu, strict=True)]) > 0.99


@pytest.mark.parametrize("name", NEURAL)
def test_trained_on_cuda_then_scored_on_cpu(
    name: str, train: EventBatch, test_batch: EventBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpu = build(name, "cuda")
    gpu.learn_many(train)
    batch = probe(test_batch)
    scores = gpu.score_many(batch)
    assert device_of(gpu) == "cuda" and np.isfinite(scores).all()
    assert scores[-2] > np.quantile(scores[:-2], 0.95), "the planted anomaly must rank high"
    monkeypatch.setattr(ape_module, "default_device", lambda: torch.device("cpu"))
    cpu = DETECTORS[name].from_state(*gpu.state_dict())
    assert device_of(cpu) == "cpu", "a checkpoint must not pin the device it was trained on"
    np.testing.assert_allclose(cpu.score_many(batch), scores, rtol=1e-5, atol=1e-4)


def test_devnet_fine_tunes_on_cuda_without_nan(train: EventBatch) -> None:
    det = build("devnet", "cuda")
    det.learn_many(train)
    alike = ("user_1", "host_1", "process_1", "port_8")
    before = det.score_many(EventBatch(TYPES, [alike, train.rows[0]]))
    det.learn_labels(EventBatch(TYPES, [("user_1", "host_1", "process_1", "port_9")]), np.ones(1))
    after = det.score_many(EventBatch(TYPES, [alike, train.rows[0]]))
    assert np.isfinite(after).all()
    assert after[0] - before[0] > after[1] - before[1] + 1.0


def test_learning_on_cuda_is_seeded_to_float32_rounding(train: EventBatch) -> None:
    a, b = build("ape", "cuda"), build("ape", "cuda")
    a.learn_many(train)
    b.learn_many(train)
    np.testing.assert_allclose(a.score_many(train), b.score_many(train), rtol=1e-5, atol=1e-5)


def test_apes_stream_learning_runs_on_cuda(
    train: EventBatch, test_batch: EventBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the service runs for an APE kind: learning as a stream in small calls, its replay
    window and optimiser on the device; the planted anomaly ranks high and the state moves
    to the CPU with the same scores."""
    det = APEDetector(TYPES, dim=8, batch_size=128, replay_size=1000,
                      train_steps_per_event=0.02, device="cuda")  # fmt: skip
    for s in range(0, len(train), 250):
        det.learn_many(EventBatch(TYPES, train.rows[s : s + 250], train.times[s : s + 250]))
    assert det.steps_ > 1000 * 10 // 128 and det.streamed_ == len(train)
    batch = probe(test_batch)
    scores = det.score_many(batch)
    assert scores[-2] > np.quantile(scores[:-2], 0.95)
    monkeypatch.setattr(ape_module, "default_device", lambda: torch.device("cpu"))
    cpu = APEDetector.from_state(*det.state_dict())
    assert cpu.device.type == "cpu"
    np.testing.assert_allclose(cpu.score_many(batch), scores, rtol=1e-5, atol=1e-4)
