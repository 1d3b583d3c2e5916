"""Per-field frequency detector (AVF, Koufakou et al. 2007), the baseline every model must beat.

An event is unusual when its entity values are rare: the score is the mean surprisal
-log p(value) over its entity types, with add-one smoothing so an unseen value gets a finite,
high score. Pair co-occurrence counts give the explanation ("these two were never seen
together", ranked against chance). It is the service's default detector and the quality
benchmark's reference peer.

Memory is bounded, as the vocabulary of the neural detectors is: at most `max_values` values
per entity type and `max_pairs` value pairs per pair of types (new addresses, ports and
flows arrive forever). Past a bound the table is cut to 90% of it, the lowest counts going
first (of equal counts, the oldest); a forgotten value or pair counts as never seen again
(its surprisal is that of a new one, which for a value seen a handful of times among
millions is nearly what it was).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import combinations, repeat
from typing import Any

import numpy as np

from detectors.base import (
    STATE_FORMAT,
    Detector,
    EntityRarity,
    EventBatch,
    Explanation,
    PairContribution,
)


class FrequencyDetector(Detector):
    """Mean per-field surprisal; counts optionally decay so old traffic fades."""

    name = "frequency"

    def __init__(
        self,
        entity_types: Sequence[str],
        half_life_events: float = 0.0,
        max_values: int = 100_000,
        max_pairs: int = 100_000,
    ) -> None:
        super().__init__(entity_types)
        if max_values < 1 or max_pairs < 1:
            raise ValueError("max_values and max_pairs must be >= 1")
        self.half_life_events = float(half_life_events)
        self.max_values, self.max_pairs = int(max_values), int(max_pairs)
        self._pairs = list(combinations(range(len(self.entity_types)), 2))
        # Counters: `update(iterable)` counts at C speed, the hot path of learning.
        self.counts_: list[Counter[str]] = [Counter() for _ in self.entity_types]
        self.pair_counts_: list[Counter[tuple[str, str]]] = [Counter() for _ in self._pairs]

    # -- learning -------------------------------------------------------------------------
    def learn_many(self, batch: EventBatch) -> None:
        self._check(batch)
        n = len(batch)
        if n == 0:
            return
        if self.half_life_events > 0:
            self._decay(0.5 ** (n / self.half_life_events))
        head = batch.rows[:256]  # a look at the batch's start decides how to count it
        if len(set(map(tuple, head))) * 4 <= len(head):
            # repetitive traffic: count each distinct row once, weighted
            for row, c in Counter(map(tuple, batch.rows)).items():  # rows: any sequence
                for counts, v in zip(self.counts_, row, strict=True):
                    counts[v] += c
                for counter, (i, j) in zip(self.pair_counts_, self._pairs, strict=True):
                    counter[row[i], row[j]] += c
        else:  # mostly distinct rows: per column at C speed
            cols = list(zip(*batch.rows, strict=True))
            for counts, col in zip(self.counts_, cols, strict=True):
                counts.update(col)
            for counter, (i, j) in zip(self.pair_counts_, self._pairs, strict=True):
                counter.update(zip(cols[i], cols[j], strict=True))
        self.events_seen_ += n
        _bound_tables(self.counts_, self.max_values)
        _bound_tables(self.pair_counts_, self.max_pairs)

    def _decay(self, factor: float) -> None:
        tables: list[Any] = [*self.counts_, *self.pair_counts_]  # counts become floats
        for counter in tables:
            for k in counter:
                counter[k] *= factor
        self.events_seen_ *= factor

    # -- scoring --------------------------------------------------------------------------
    def _surprisal(self, counts: Counter[str], values: Sequence[str]) -> np.ndarray:
        total = self.events_seen_ + len(counts) + 1.0  # add-one over seen values + one unseen
        c = np.fromiter(map(counts.get, values, repeat(0.0)), dtype=np.float64, count=len(values))
        return -np.log((c + 1.0) / total)

    def score_many(self, batch: EventBatch) -> np.ndarray:
        self._check(batch)
        n = len(batch)
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        cols = list(zip(*batch.rows, strict=True))
        out = np.zeros(n, dtype=np.float64)
        for j, counts in enumerate(self.counts_):
            out += self._surprisal(counts, cols[j])
        return out / len(self.entity_types)

    def explain_many(self, batch: EventBatch, top_k: int = 3) -> list[Explanation]:
        """Rarity of each value, and the pairs seen together least often against chance.

        A pair's blame is log(expected / observed co-occurrences), add-one smoothed (negative
        pointwise mutual information): two common values never seen together are what "do
        not belong together"; a rare value with its usual companion (an alert code with its
        own name) is not, however rare the pair is, because the rarity list already says the
        value is rare. Contributions are shares of the positive blame (0 when no pair is
        seen less often than chance)."""
        self._check(batch)
        types = self.entity_types
        seen = max(self.events_seen_, 1.0)
        explanations = []
        for row in batch.rows:
            counts = [self.counts_[j].get(row[j], 0.0) for j in range(len(types))]
            rarity = tuple(
                EntityRarity(t, row[j], counts[j], counts[j] / seen) for j, t in enumerate(types)
            )
            scored = []
            for counter, (i, j) in zip(self.pair_counts_, self._pairs, strict=True):
                together = counter.get((row[i], row[j]), 0.0)
                blame = math.log((counts[i] + 1.0) * (counts[j] + 1.0)) - math.log(
                    (together + 1.0) * (seen + 1.0)
                )
                scored.append((blame, i, j, together))
            scored.sort(key=lambda s: -s[0])  # stable: ties keep the earlier entity types first
            total = sum(b for b, *_ in scored if b > 0) or 1.0
            pairs = tuple(
                PairContribution(types[i], row[i], types[j], row[j], max(b, 0.0) / total,
                                 together)
                for b, i, j, together in scored[:top_k]
            )  # fmt: skip
            explanations.append(Explanation(pairs=pairs, rarity=rarity))
        return explanations

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {}
        values: list[list[str]] = []
        for j, counts in enumerate(self.counts_):
            values.append(list(counts))
            arrays[f"counts.{j}"] = np.fromiter(counts.values(), np.float64, len(counts))
        pair_keys: list[list[list[str]]] = []
        for p, counter in enumerate(self.pair_counts_):
            pair_keys.append([list(k) for k in counter])
            arrays[f"pair_counts.{p}"] = np.fromiter(counter.values(), np.float64, len(counter))
        meta = {
            "detector": self.name,
            "state_format": STATE_FORMAT,
            "entity_types": list(self.entity_types),
            "half_life_events": self.half_life_events,
            "max_values": self.max_values,
            "max_pairs": self.max_pairs,
            "events_seen": self.events_seen_,
            "values": values,
            "pair_keys": pair_keys,
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> FrequencyDetector:
        cls.check_state(meta)
        bounds = {k: meta[k] for k in ("max_values", "max_pairs") if k in meta}  # older: none
        det = cls(meta["entity_types"], half_life_events=meta["half_life_events"], **bounds)
        det.events_seen_ = float(meta["events_seen"])
        for j, values in enumerate(meta["values"]):
            counts = arrays[f"counts.{j}"]
            if len(counts) != len(values):
                raise ValueError(f"counts.{j} has {len(counts)} entries for {len(values)} values")
            det.counts_[j] = Counter(dict(zip(values, counts.tolist(), strict=True)))
        if len(meta["pair_keys"]) != len(det._pairs):
            raise ValueError(f"{len(meta['pair_keys'])} pair tables for {len(det._pairs)} pairs")
        for p, keys in enumerate(meta["pair_keys"]):
            counts = arrays[f"pair_counts.{p}"]
            if len(counts) != len(keys):
                raise ValueError(f"pair_counts.{p} does not match its keys")
            det.pair_counts_[p] = Counter(
                {(a, b): c for (a, b), c in zip(keys, counts.tolist(), strict=True)}
            )
        return det


def keep_highest(table: Counter, size: int) -> Counter:
    """The `size` entries of `table` with the highest counts; among equal counts the newest
    (the last first seen) stay, as what just arrived is likelier to come back."""
    keep = {k for k, _ in sorted(reversed(table.items()), key=lambda kv: -kv[1])[:size]}
    return Counter({k: v for k, v in table.items() if k in keep})  # first-seen order kept


def _bound_tables(tables: list, bound: int) -> None:
    """Cut every table past `bound` entries down to 90% of it (`keep_highest`)."""
    for k, table in enumerate(tables):
        if len(table) > bound:
            tables[k] = keep_highest(table, int(0.9 * bound))
