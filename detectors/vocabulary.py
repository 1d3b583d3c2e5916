"""Per-type entity vocabulary that grows online, for the entity-embedding models.

All entities of all types share one id space (one embedding table, as in APE, Chen et al.
IJCAI 2016); each type owns a `<rare>` id that every value seen fewer than `min_count` times
maps to, so the model learns a meaning for "something rare of this type" and an unseen value
at scoring time is not a crash or a random vector. Counts decay (half-life in events), so the
counts are the recent unigram distribution that NCE draws its noise from. Memory is capped per
type: past `max_size` values, the ones with the lowest decayed count are evicted and their ids
recycled (the caller re-initialises those rows: `observe` returns them).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np

RARE = "<rare>"


class Vocabulary:
    """Entity value <-> id per type, with decayed counts and a per-type `<rare>` id."""

    def __init__(
        self,
        entity_types: Sequence[str],
        min_count: int = 2,
        max_size: int = 100_000,
        half_life_events: float = 0.0,
    ) -> None:
        if min_count < 1 or max_size < 1:
            raise ValueError("min_count and max_size must be >= 1")
        self.entity_types = tuple(entity_types)
        self.min_count = int(min_count)
        self.max_size = int(max_size)
        self.half_life_events = float(half_life_events)
        m = len(self.entity_types)
        self.index: list[dict[str, int]] = [{} for _ in range(m)]  # value -> global id
        self.pending: list[dict[str, float]] = [{} for _ in range(m)]  # below min_count
        self.values: list[str] = []  # global id -> value
        self.types = np.zeros(0, dtype=np.int64)  # global id -> type index
        self.counts = np.zeros(0, dtype=np.float64)  # global id -> decayed count
        self.free: list[int] = []
        self.rare_ids = np.array([self._new_id(j, RARE) for j in range(m)], dtype=np.int64)
        self.events_seen = 0.0

    # -- ids ------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Size of the id space (the embedding table needs this many rows)."""
        return len(self.values)

    def _new_id(self, j: int, value: str) -> int:
        if self.free:
            i = self.free.pop()
            self.values[i] = value
            self.types[i] = j
            self.counts[i] = 0.0
            return i
        i = len(self.values)
        self.values.append(value)
        if i >= len(self.types):
            grow = max(16, 2 * len(self.types))
            self.types = np.concatenate([self.types, np.zeros(grow, np.int64)])
            self.counts = np.concatenate([self.counts, np.zeros(grow, np.float64)])
        self.types[i] = j
        self.counts[i] = 0.0
        return i

    def size(self, j: int) -> int:
        """Values of type j with their own id (the `<rare>` id not included)."""
        return len(self.index[j])

    def encode(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        """int64 ids [n, m]; values without an id map to their type's `<rare>` id."""
        n, m = len(rows), len(self.entity_types)
        out = np.empty((n, m), dtype=np.int64)
        if n == 0:
            return out
        cols = list(zip(*rows, strict=True))
        for j in range(m):
            rare = repeat(int(self.rare_ids[j]))  # map() with dict.get runs at C speed
            out[:, j] = np.fromiter(map(self.index[j].get, cols[j], rare), np.int64, n)
        return out

    # -- learning -------------------------------------------------------------------------
    def observe(self, rows: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[int]]:
        """Count a batch (after decaying old counts); return its ids and ids (re)assigned now."""
        n = len(rows)
        if n == 0:
            return np.zeros((0, len(self.entity_types)), np.int64), []
        if self.half_life_events > 0:
            factor = 0.5 ** (n / self.half_life_events)
            self.counts *= factor
            for pend in self.pending:
                for k in pend:
                    pend[k] *= factor
        fresh: list[int] = []
        cols = list(zip(*rows, strict=True))
        for j, col in enumerate(cols):
            index, pend = self.index[j], self.pending[j]
            for v in col:
                if v in index:
                    continue
                c = pend.get(v, 0.0) + 1.0
                if c >= self.min_count:
                    pend.pop(v, None)
                    i = self._new_id(j, v)
                    index[v] = i
                    self.counts[i] = c - 1.0  # the current occurrence is added below
                    self.counts[self.rare_ids[j]] = max(
                        self.counts[self.rare_ids[j]] - (c - 1.0), 0.0
                    )
                    fresh.append(i)
                else:
                    pend[v] = c
        np.add.at(self.counts, self.encode(rows).ravel(), 1.0)
        for j in range(len(cols)):
            self._cap(j)
        ids = self.encode(rows)
        self.events_seen = (
            self.events_seen
            * (0.5 ** (n / self.half_life_events) if self.half_life_events > 0 else 1.0)
            + n
        )
        gone = set(self.free)
        return ids, [i for i in fresh if i not in gone]

    def _cap(self, j: int) -> None:
        index = self.index[j]
        excess = len(index) - self.max_size
        if excess > 0:
            ids = np.fromiter(index.values(), np.int64, len(index))
            drop = ids[np.argsort(self.counts[ids], kind="stable")[:excess]]
            for i in drop.tolist():
                del index[self.values[i]]
                self.counts[self.rare_ids[j]] += self.counts[i]
                self.counts[i] = 0.0
                self.values[i] = ""
                self.free.append(i)
        pend = self.pending[j]
        if len(pend) > 4 * self.max_size:  # candidates are bounded too
            keep = sorted(pend.items(), key=lambda kv: -kv[1])[: 2 * self.max_size]
            self.pending[j] = dict(keep)

    # -- noise distribution ---------------------------------------------------------------
    def type_ids(self, j: int) -> np.ndarray:
        """Ids of type j, `<rare>` first."""
        ids = np.fromiter(self.index[j].values(), np.int64, len(self.index[j]))
        return np.concatenate([self.rare_ids[j : j + 1], ids])

    def count_of(self, j: int, value: str) -> float:
        """Decayed count of a value (a value without an id: its pending count)."""
        i = self.index[j].get(value)
        return float(self.counts[i]) if i is not None else self.pending[j].get(value, 0.0)

    # -- state ----------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        n = len(self.values)
        arrays = {"vocab.types": self.types[:n].copy(), "vocab.counts": self.counts[:n].copy()}
        pend_vals = [list(p) for p in self.pending]
        for j, p in enumerate(self.pending):
            arrays[f"vocab.pending.{j}"] = np.fromiter(p.values(), np.float64, len(p))
        meta = {
            "entity_types": list(self.entity_types),
            "min_count": self.min_count,
            "max_size": self.max_size,
            "half_life_events": self.half_life_events,
            "values": self.values,
            "free": self.free,
            "rare_ids": self.rare_ids.tolist(),
            "pending": pend_vals,
            "events_seen": self.events_seen,
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Vocabulary:
        voc = cls(
            meta["entity_types"], meta["min_count"], meta["max_size"], meta["half_life_events"]
        )
        values = list(meta["values"])
        types = np.asarray(arrays["vocab.types"], np.int64)
        if len(types) != len(values) or len(arrays["vocab.counts"]) != len(values):
            raise ValueError("vocabulary arrays do not match its values")
        voc.values = values
        voc.types = types.copy()
        voc.counts = np.asarray(arrays["vocab.counts"], np.float64).copy()
        voc.free = [int(i) for i in meta["free"]]
        voc.rare_ids = np.asarray(meta["rare_ids"], np.int64)
        free = set(voc.free)
        voc.index = [{} for _ in voc.entity_types]
        rare = set(voc.rare_ids.tolist())
        for i, (v, j) in enumerate(zip(values, types.tolist(), strict=True)):
            if i not in free and i not in rare:
                voc.index[j][v] = i
        for j, vals in enumerate(meta["pending"]):
            cnt = arrays[f"vocab.pending.{j}"]
            if len(cnt) != len(vals):
                raise ValueError(f"pending counts of type {j} do not match")
            voc.pending[j] = dict(zip(vals, cnt.tolist(), strict=True))
        voc.events_seen = float(meta["events_seen"])
        return voc
