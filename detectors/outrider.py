"""Outrider's default detector: entity rarity + APE pair likelihood, ranked by group with MMR.

What each part buys (measured on AIT, protocol v2; figures in bench/README.md):
- per-entity rarity (the mean surprisal -log p(value) of each entity, from the vocabulary's
  decayed counts): the strongest single signal on real alert data, the one counting gets right;
- APE's -S(e) (Chen et al. IJCAI 2016), standardised on the training data and added with weight
  `ape_weight`: which *combinations* of known entities do not belong together, and the pair
  explanation; on AIT it did not improve the ranking, so the default weight is small;
- time context (detectors/context.py), off by default (`context_weight=0`): as an additive
  per-alert term it made AIT rankings worse; when on, `score_many` advances the rate state,
  and `learn_many` only feeds it events newer than what it has seen;
- burst context (detectors/context.py `BurstContext`), off by default (`burst_weight=0`):
  `burst_weight * max(0, s - burst_floor)`, s = how far the pattern's count in the current
  window exceeds its own past windows (an empirical tail, robust to bursty chronic streams,
  where the Poisson rate surprise is not); only the far tail (s > `burst_floor`, a tail
  probability under e^-4 by default) counts, so ordinary activity is left to rarity;
- group ranking with time-aware MMR (detectors/ranking.py, `rank`): what moved the hard attack
  steps up; the service should rank alert groups through `rank`. Optional, off by default:
  `mmr_burst` (groups firing in the same `burst_window_s` buckets as a group already shown are
  alike even with no field in common), `chronic_weight` (a group firing in many buckets of
  the batch is demoted by `chronic_weight * log(buckets)`) and `cofire_sim` (a group whose
  alerts fire within `cofire_s` seconds of a shown group's alerts on the same `cofire_types`
  values, e.g. the same host, is that event seen by another rule);
- stream context (detectors/streams.py `StreamContext`), off by default: over the (source,
  host) streams named by `stream_types` (e.g. alert code, host), `rank` adds
  `silence_weight` to alerts on a host in the minutes after one of its steady streams stopped,
  and `mirror_weight` to alerts of an episode that lacked the mirror stream it nearly always
  had (the same source on another host). Both are known only later, so they act on ranking,
  not on `score_many`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from itertools import repeat
from typing import Any, cast

import numpy as np

from detectors.ape import APEDetector
from detectors.base import STATE_FORMAT, Detector, EventBatch, Explanation, arrays_under
from detectors.context import BurstContext, RateContext
from detectors.frequency import FrequencyDetector
from detectors.ranking import RankedGroups, rank_groups
from detectors.streams import StreamContext


class OutriderDetector(Detector):
    """The product detector. Score = mean entity surprisal + ape_weight * z(-S) (+ context,
    + burst)."""

    name = "outrider"

    def __init__(
        self,
        entity_types: Sequence[str],
        ape_weight: float = 0.0,
        context_weight: float = 0.0,
        context_window_s: float = 600.0,
        mmr_lambda: float = 1.0,
        mmr_bucket_s: float = 3600.0,
        mmr_types: Sequence[str] | None = None,
        family_types: Sequence[str] = (),
        burst_weight: float = 0.0,
        burst_window_s: float = 600.0,
        burst_floor: float = 4.0,
        mmr_burst: float = 0.0,
        chronic_weight: float = 0.0,
        cofire_sim: float = 0.0,
        cofire_s: float = 5.0,
        cofire_types: Sequence[str] = (),
        stream_types: Sequence[str] = (),
        silence_weight: float = 0.0,
        mirror_weight: float = 0.0,
        max_pairs: int = 100_000,
        **ape_kwargs: Any,
    ) -> None:
        super().__init__(entity_types)
        if (silence_weight or mirror_weight) and len(stream_types) != 2:
            raise ValueError("stream_types must name a source and a host type")
        named = set(mmr_types or ()) | set(family_types) | set(cofire_types) | set(stream_types)
        unknown = named - set(self.entity_types)
        if unknown:
            raise ValueError(f"unknown entity types {sorted(unknown)}")
        self.config: dict[str, Any] = {
            "ape_weight": float(ape_weight), "context_weight": float(context_weight),
            "context_window_s": float(context_window_s), "mmr_lambda": float(mmr_lambda),
            "mmr_bucket_s": float(mmr_bucket_s),
            "mmr_types": None if mmr_types is None else list(mmr_types),
            "family_types": list(family_types),
            "burst_weight": float(burst_weight), "burst_window_s": float(burst_window_s),
            "burst_floor": float(burst_floor), "mmr_burst": float(mmr_burst),
            "chronic_weight": float(chronic_weight), "cofire_sim": float(cofire_sim),
            "cofire_s": float(cofire_s), "cofire_types": list(cofire_types),
            "stream_types": list(stream_types), "silence_weight": float(silence_weight),
            "mirror_weight": float(mirror_weight), "max_pairs": int(max_pairs),
        }  # fmt: skip
        self.ape = APEDetector(entity_types, **ape_kwargs)
        # without APE (weight 0) its embeddings are never trained: pairs are explained by how
        # often the two values were seen together, against chance (FrequencyDetector's counts)
        limits = {"max_values": self.ape.vocab.max_size, "max_pairs": max_pairs}
        self.pairs = FrequencyDetector(entity_types, **limits) if ape_weight == 0.0 else None
        self.context = RateContext(context_window_s)
        self.burst = BurstContext(burst_window_s)
        self.streams = StreamContext()
        self.ape_center_ = 0.0
        self.ape_scale_ = 1.0

    @property
    def mmr_lambda(self) -> float:
        return self.config["mmr_lambda"]

    # -- learning -------------------------------------------------------------------------
    def learn_many(self, batch: EventBatch) -> None:
        self._check(batch)
        if len(batch) == 0:
            return
        if self.config["ape_weight"] != 0.0:
            self.ape.learn_many(batch)
            s = self.ape.score_many(batch)
            self.ape_center_, self.ape_scale_ = float(np.median(s)), float(s.std() + 1e-9)
        else:  # counts only: the vocabulary is the rarity model
            self.ape.vocab.observe(batch.rows)
            self.ape.model.grow(len(self.ape.vocab))
        if self.pairs is not None:
            self.pairs.learn_many(batch)
        self.events_seen_ = self.ape.vocab.events_seen
        # the time contexts take only what is newer than what they have seen
        if self.config["context_weight"] != 0.0:
            idx = np.flatnonzero(batch.times > self.context.clock).tolist()
            self.context.observe([batch.rows[i] for i in idx], batch.times[idx])
        if self.config["burst_weight"] != 0.0:
            idx = np.flatnonzero(batch.times > self.burst.clock).tolist()
            self.burst.observe([batch.rows[i] for i in idx], batch.times[idx])
        if self._streams_on:
            idx = np.flatnonzero(batch.times > self.streams.clock).tolist()
            keys = self.stream_keys(batch)
            self.streams.observe([keys[i] for i in idx], batch.times[idx])

    # -- scoring --------------------------------------------------------------------------
    def surprisal(self, batch: EventBatch) -> np.ndarray:
        """Mean over entity types of -log p(value), add-one smoothed (unseen = finite, high)."""
        voc = self.ape.vocab
        n = len(batch)
        out = np.zeros(n)
        if n == 0:
            return out
        cols = list(zip(*batch.rows, strict=True))
        seen = voc.events_seen
        for j in range(len(self.entity_types)):
            index, pend, counts = voc.index[j], voc.pending[j], voc.counts
            ids = np.fromiter(map(index.get, cols[j], repeat(-1)), np.int64, n)
            c = counts[ids]
            unknown = np.flatnonzero(ids < 0)  # not (yet) in the vocabulary: pending counts
            if len(unknown):
                col = cols[j]
                c[unknown] = [pend.get(col[i], 0.0) for i in unknown.tolist()]
            total = seen + voc.size(j) + len(pend) + 1.0
            out += -np.log((c + 1.0) / total)
        return out / len(self.entity_types)

    def score_many(self, batch: EventBatch, advance: bool = True) -> np.ndarray:
        """Scores of a batch. With the burst context on, scoring also advances it (the batch
        becomes the past of the next one); `advance=False` scores against the burst context
        as it is and leaves it unchanged (what-if queries, re-scoring a batch already seen)."""
        self._check(batch)
        score = self.surprisal(batch)
        if len(batch) == 0:
            return score
        cfg = self.config
        if cfg["ape_weight"] != 0.0:
            z = (self.ape.score_many(batch) - self.ape_center_) / self.ape_scale_
            score = score + cfg["ape_weight"] * z
        if cfg["context_weight"] != 0.0:
            score = score + cfg["context_weight"] * self.context.observe(batch.rows, batch.times)
        if cfg["burst_weight"] != 0.0:
            s = self.burst.observe(batch.rows, batch.times, update=advance)
            score = score + cfg["burst_weight"] * np.maximum(s - cfg["burst_floor"], 0.0)
        if self._streams_on and advance:
            self.streams.observe(self.stream_keys(batch), batch.times)
        return score

    @property
    def _streams_on(self) -> bool:
        return bool(self.config.get("silence_weight") or self.config.get("mirror_weight"))

    def stream_keys(self, batch: EventBatch) -> list[tuple[str, str]]:
        """Each event's (source, host) stream: its values of `stream_types`."""
        src, host = (self.entity_types.index(t) for t in self.config["stream_types"])
        return [(r[src], r[host]) for r in batch.rows]

    def stream_boost(self, batch: EventBatch) -> np.ndarray:
        """What the stream context adds to each alert's ranking score, as known now (events
        the context has observed; see detectors/streams.py)."""
        if not self._streams_on:
            return np.zeros(len(batch))
        after, lonely = self.streams.flags(self.stream_keys(batch), batch.times)
        cfg = self.config
        return cfg["silence_weight"] * after + cfg["mirror_weight"] * lonely

    def peek_many(self, batch: EventBatch) -> np.ndarray:
        """`score_many` without moving the time context: the burst context is read as it is,
        the rate context (which always remembers what it scores) on a copy."""
        if self.config["context_weight"] == 0.0:
            return self.score_many(batch, advance=False)
        live = self.context
        self.context = copy.deepcopy(live)
        try:
            return self.score_many(batch, advance=False)
        finally:
            self.context = live

    def rank(self, batch: EventBatch, scores: np.ndarray | None = None) -> RankedGroups:
        """Alert groups of a batch in the order the analyst should read them."""
        if scores is None:
            scores = self.score_many(batch)
        if self._streams_on:
            scores = scores + self.stream_boost(batch)
        cfg = self.config
        return rank_groups(batch.rows, batch.times, scores, lam=cfg["mmr_lambda"],
                           bucket_s=cfg["mmr_bucket_s"], similarity_key=self.similarity_key,
                           burst_sim=cfg.get("mmr_burst", 0.0),
                           burst_bucket_s=cfg.get("burst_window_s", 600.0),
                           chronic_weight=cfg.get("chronic_weight", 0.0),
                           cofire_sim=cast(float, cfg.get("cofire_sim", 0.0)),
                           cofire_s=cast(float, cfg.get("cofire_s", 5.0)),
                           cofire_key=self.cofire_key)  # fmt: skip

    def cofire_key(self, key: Sequence[str]) -> tuple[str, ...]:
        """What two co-firing groups must share to count as one event: `cofire_types`."""
        idx = self.entity_types.index
        types = cast(list[str], self.config.get("cofire_types") or [])
        return tuple(key[idx(t)] for t in types)

    def similarity_key(self, key: Sequence[str]) -> tuple[str, ...]:
        """What MMR compares between groups: `mmr_types` (default all) + `family_types`'
        families (value prefix before its last '-', e.g. alert code W-Acc-400 -> W-Acc)."""
        from detectors.feedback import family

        types = self.config.get("mmr_types") or self.entity_types
        fams = self.config.get("family_types") or ()
        idx = self.entity_types.index
        return tuple(key[idx(t)] for t in types) + tuple(family(key[idx(t)]) for t in fams)

    def explain_many(self, batch: EventBatch, top_k: int = 3) -> list[Explanation]:
        """APE's pair terms when APE is on; else pairs seen together less often than chance
        (never pairs from embeddings that were not trained)."""
        if self.pairs is not None:
            return self.pairs.explain_many(batch, top_k)
        return self.ape.explain_many(batch, top_k)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, ape_meta = self.ape.state_dict()
        carr, cmeta = self.context.state()
        arrays.update(carr)
        barr, bmeta = self.burst.state()
        arrays.update(barr)
        sarr, smeta = self.streams.state()
        arrays.update(sarr)
        pmeta = None
        if self.pairs is not None:
            parr, pmeta = self.pairs.state_dict()
            arrays.update({f"pairs/{k}": v for k, v in parr.items()})
        meta = {
            "detector": self.name,
            "state_format": STATE_FORMAT,
            "entity_types": list(self.entity_types),
            "config": self.config,
            "ape": ape_meta,
            "context": cmeta,
            "burst": bmeta,
            "streams": smeta,
            "pairs": pmeta,
            "ape_center": self.ape_center_,
            "ape_scale": self.ape_scale_,
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> OutriderDetector:
        cls.check_state(meta)
        det = cls(meta["entity_types"], **meta["config"], **meta["ape"]["config"])
        det.ape.load_arrays(arrays, meta["ape"])
        det.context = RateContext.from_state(arrays, meta["context"])
        if "burst" in meta:  # states saved before the burst context have none
            det.burst = BurstContext.from_state(arrays, meta["burst"])
        if "streams" in meta:  # states saved before the stream context have none
            det.streams = StreamContext.from_state(arrays, meta["streams"])
        if det.pairs is not None and meta.get("pairs"):  # older states: learned anew
            det.pairs = FrequencyDetector.from_state(arrays_under(arrays, "pairs/"), meta["pairs"])
        det.ape_center_ = float(meta["ape_center"])
        det.ape_scale_ = float(meta["ape_scale"])
        det.events_seen_ = det.ape.vocab.events_seen
        return det
