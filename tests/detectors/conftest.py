"""Synthetic events with structure (clusters of entities that belong together) for detectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors.base import EventBatch

TYPES = ("user", "host", "process", "port")

torch.set_num_threads(1)


def make_events(n: int, seed: int = 0, clusters: int = 5, noise: float = 0.02) -> EventBatch:
    """Each event is one cluster's tuple; a field is sometimes swapped for a long-tail value."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in rng.integers(clusters, size=n).tolist():
        row = [f"{t}_{c}" for t in TYPES]
        for j in range(len(TYPES)):
            if rng.random() < noise:
                row[j] = f"{TYPES[j]}_tail{rng.integers(40)}"
        rows.append(tuple(row))
    return EventBatch(TYPES, rows, np.arange(n, dtype=np.float64))


#: Cross-cluster entities and a never-seen port: anomalous for counting and for embeddings.
PLANTED = ("user_0", "host_1", "process_2", "port_never_seen")


@pytest.fixture(scope="session")
def train() -> EventBatch:
    return make_events(3000, seed=1)


@pytest.fixture(scope="session")
def test_batch() -> EventBatch:
    return make_events(500, seed=2)
