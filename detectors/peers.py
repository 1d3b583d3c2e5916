"""Published detectors a user might pick instead of Outrider; the quality benchmark's peers.

They follow the detector contract for learning, scoring and explaining, but are not in the
checkpoint registry: Isolation Forest and HalfSpaceTrees keep their state as Python objects
that would need pickle, which Outrider never loads, so `state_dict` refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from detectors.base import Detector, EntityRarity, EventBatch, Explanation


class _BenchOnly(Detector):
    """Peers explain by rarity only and cannot be checkpointed."""

    def _codes(self, rows: Sequence[Sequence[str]], grow: bool) -> np.ndarray:
        if not hasattr(self, "_index"):
            self._index: list[dict[str, int]] = [{} for _ in self.entity_types]
        n = len(rows)
        out = np.full((n, len(self.entity_types)), -1, dtype=np.int64)
        if n == 0:
            return out
        cols = list(zip(*rows, strict=True))
        for j, col in enumerate(cols):
            idx = self._index[j]
            if grow:
                out[:, j] = [idx.setdefault(v, len(idx)) for v in col]
            else:
                out[:, j] = [idx.get(v, -1) for v in col]
        return out

    def explain_many(self, batch: EventBatch, top_k: int = 3) -> list[Explanation]:
        self._check(batch)
        return [
            Explanation(pairs=(), rarity=tuple(EntityRarity(t, r[j], 0.0, 0.0)
                                               for j, t in enumerate(self.entity_types)))
            for r in batch.rows
        ]  # fmt: skip

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        raise NotImplementedError(f"{self.name} is a benchmark peer; it is not checkpointed")

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Detector:
        raise NotImplementedError(f"{cls.name} is a benchmark peer; it is not checkpointed")


class ZeroPlusPlus(_BenchOnly):
    """ZERO++ (Pang, Ting, Albrecht, Jin, JAIR 2016): zero appearances in tiny subsamples.

    `t` random subsamples of `psi` events; for every subspace of 1..`max_dim` entity types an
    event scores one point per subsample where its value combination in that subspace never
    appears. Anomalies are the events most often absent.
    """

    name = "zero++"

    def __init__(self, entity_types: Sequence[str], t: int = 50, psi: int = 8,
                 max_dim: int = 2, seed: int = 0) -> None:  # fmt: skip
        super().__init__(entity_types)
        self.t, self.psi, self.seed = t, psi, seed
        m = len(self.entity_types)
        self.subspaces = [c for q in range(1, max_dim + 1) for c in combinations(range(m), q)]
        self.samples_: list[list[np.ndarray]] = []

    def _combo(self, codes: np.ndarray, sub: tuple[int, ...]) -> np.ndarray:
        key = np.zeros(len(codes), dtype=np.int64)
        for j in sub:
            key = key * 1_000_003 + codes[:, j] + 1
        return key

    def learn_many(self, batch: EventBatch) -> None:
        self._check(batch)
        if len(batch) == 0:
            return
        codes = self._codes(batch.rows, grow=True)
        rng = np.random.default_rng(self.seed)
        self.samples_ = []
        for _ in range(self.t):
            pick = codes[rng.choice(len(codes), size=min(self.psi, len(codes)), replace=False)]
            self.samples_.append([np.unique(self._combo(pick, s)) for s in self.subspaces])
        self.events_seen_ += len(batch)

    def score_many(self, batch: EventBatch) -> np.ndarray:
        self._check(batch)
        codes = self._codes(batch.rows, grow=False)
        out = np.zeros(len(batch))
        if len(batch) == 0 or not self.samples_:
            return out
        combos = [self._combo(codes, s) for s in self.subspaces]
        for sample in self.samples_:
            for key, present in zip(combos, sample, strict=True):
                out += ~np.isin(key, present)
        return out / (len(self.samples_) * len(self.subspaces))


class IsolationForestOneHot(_BenchOnly):
    """Isolation Forest (Liu, Ting, Zhou, ICDM 2008) on one-hot entity values (scikit-learn)."""

    name = "iforest"

    def __init__(self, entity_types: Sequence[str], n_estimators: int = 100, seed: int = 0):
        super().__init__(entity_types)
        from sklearn.ensemble import IsolationForest
        from sklearn.preprocessing import OneHotEncoder

        self.encoder = OneHotEncoder(handle_unknown="ignore")
        self.forest = IsolationForest(n_estimators=n_estimators, random_state=seed)
        self.fitted = False

    def learn_many(self, batch: EventBatch) -> None:
        self._check(batch)
        if len(batch) == 0:
            return
        x = self.encoder.fit_transform(np.array(batch.rows, dtype=object))
        self.forest.fit(x)
        self.fitted = True
        self.events_seen_ += len(batch)

    def score_many(self, batch: EventBatch) -> np.ndarray:
        self._check(batch)
        if len(batch) == 0 or not self.fitted:
            return np.zeros(len(batch))
        x = self.encoder.transform(np.array(batch.rows, dtype=object))
        return -self.forest.score_samples(x)


class HalfSpaceTreesOneHot(_BenchOnly):
    """river's HalfSpaceTrees (Tan, Ting, Liu, IJCAI 2011) on one-hot features, online."""

    name = "hst"

    def __init__(self, entity_types: Sequence[str], n_trees: int = 10, height: int = 8,
                 window_size: int = 250, seed: int = 0) -> None:  # fmt: skip
        super().__init__(entity_types)
        from river.anomaly import HalfSpaceTrees

        self.model = HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size,
                                    seed=seed)  # fmt: skip

    def _x(self, row: Sequence[str]) -> dict[str, float]:
        return {f"{t}={v}": 1.0 for t, v in zip(self.entity_types, row, strict=True)}

    def learn_many(self, batch: EventBatch) -> None:
        self._check(batch)
        for row in batch.rows:
            self.model.learn_one(self._x(row))
        self.events_seen_ += len(batch)

    def score_many(self, batch: EventBatch) -> np.ndarray:
        self._check(batch)
        return np.array([self.model.score_one(self._x(r)) for r in batch.rows], dtype=np.float64)
