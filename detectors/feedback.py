"""Learning from analyst verdicts on top of any unsupervised detector; which groups to ask about.

`FeedbackDetector` wraps a base detector (by default the product's `OutriderDetector`) and adds
to its standardised score what the analyst's verdicts teach. Its parts, and where they come
from:

- Score components with a prior (after Das et al., Active Anomaly Discovery, ICDM 2016 /
  AAD): the final score is `z(base) + pattern_weight * pattern(x) + time_weight * time(x)`,
  the base component keeping its weight of 1, the learned components starting at 0 (no labels
  = exactly the base ranking, never NaN).
- `pattern(x)` (our own design, in the spirit of AAD's per-region weights): every event is a
  bag of *pattern tokens*: each entity value, each pair of entity values, and for the entity
  types named in `family_types` the value's family (the prefix before its last '-', e.g. the
  alert code `W-Acc-400` -> `W-Acc`) alone and paired with every other entity. A token's
  weight is its smoothed log-odds among labeled events, `log((m + a) / (b + a))` (m / b = the
  malicious / benign labeled events that carry it), times its specificity, the inverse
  document frequency `log((N + 1) / (df + 1))` over the distinct patterns the model has
  seen. So a verdict moves what is specific to the verdict's pattern: a token shared by a
  benign and a malicious verdict cancels; a token every pattern carries (a busy host, a
  common alert code) weighs little; a benign verdict on "this rule on this host" sinks that
  rule's look-alikes on other hosts by the specific tokens they share, not every alert with
  the code. Tokens are counted once per distinct labeled pattern (a verdict on a group of
  7,000 identical alerts is one piece of evidence).
- Which way a verdict generalises (`lift_types`, `sink_types`; ours, default: every token
  both ways): a token may lift (positive log-odds) only when all its values are of
  `lift_types`, and sink (negative) only when all are of `sink_types`. Configured with the
  entity fields (address, host) as `lift_types` and nothing as `sink_types`, a malicious
  verdict says "this host is under attack" and lifts the host's *other* alerts, while the
  look-alikes of what was read (the same rule) are held back by the MMR below, and a benign
  verdict generalises nowhere. On AIT a rule's benign verdict on one host sank the same rule's
  attack alert on another (bench/README.md, Analyst loop).
- Sinking only by conjunctions (`sink_min_types`, `sink_weight`; ours): with
  `sink_min_types=2` a token sinks only when it spans two entity types or more, e.g. with
  `sink_types=("short", "host")` and the alert-code family: "this family of rules on this
  host" and "this rule on this host". A benign verdict then says "this host's web-access
  alerts are its normal", and sinks neither the host's other kinds of alert (an attack's
  audit alerts beside a benign web-access verdict) nor the rule on other hosts (the
  webshell's high-entropy request on the web server beside a benign one on the cloud share).
- `time(x)` (ours): attack steps come in bursts, so an event close in time to an alert an
  analyst confirmed malicious is suspicious: `exp(-|t - t_m| / time_scale_s)` for the nearest
  malicious-labeled time `t_m`. Benign verdicts add nothing here. `time_other_than` counts
  only confirmed alerts elsewhere (another host); `time_same` only those on the event's own
  value (the same host): a malicious verdict says "this host, *around this time*, is under
  attack", and lifts the host's other alerts of that hour, not its benign activity of days
  before (the time-blind host token lift above did; bench/README.md, Analyst loop). With
  `time_by_group`, `rank` lifts a group by the mean of its alerts' time terms (the share of
  the group that lies in the confirmed hour), not by its one alert that does.
- Ranking (detectors/ranking.py): groups ordered by time-aware MMR whose similarity compares
  `rank_types` and the families, with the groups already read counted as shown, so the next
  round does not re-show the incident the analyst just confirmed; optionally (`mmr_burst`,
  `chronic_weight`) burst-aware and (`cofire_sim`, `cofire_s`, `cofire_types`) aware that
  groups firing within seconds of a read group on the same host are that same action seen by
  other rules (detectors/ranking.py), as `OutriderDetector.rank`.

METHODS.md's DevNet/AnoOnly head (detectors/devnet.py) is the deep alternative; on AIT's
~150 groups per scenario with 5 verdicts a round, a head trained on embeddings did not fit in
the loop's budget and this count-based layer is what `bench/analyst.py` measures.

`select_queries` picks the groups whose verdict would teach the model most for the digest:
near the alert threshold and diverse (deterministic k-means++ style seeding on group
features, after Li et al. 2023's labeling-budget batches); our own composition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from detectors.base import STATE_FORMAT, Detector, EventBatch, Explanation, arrays_under
from detectors.ranking import RankedGroups, group_alerts, rank_groups

_SEP = "\x1f"
_ESC = "\x1e"
_UNESCAPE = re.compile("\x1e(.)", re.DOTALL)
_COLUMN = re.compile(r"\d+")


def pattern_key(row: Sequence[str]) -> str:
    """One pattern as a key (verdicts, specificity), unambiguous whatever its values: a value
    holding the separator (a hostile entity) is escaped, so it never poses as two values."""
    key = _SEP.join(row)
    if key.count(_SEP) == len(row) - 1 and _ESC not in key:
        return key
    return _SEP.join(v.replace(_ESC, _ESC + _ESC).replace(_SEP, _ESC + "_") for v in row)


def pattern_row(key: str) -> tuple[str, ...]:
    """The pattern a `pattern_key` names."""
    parts = key.split(_SEP)
    if _ESC not in key:
        return tuple(parts)
    return tuple(_UNESCAPE.sub(lambda m: _SEP if m[1] == "_" else m[1], p) for p in parts)


def family(value: str) -> str:
    """A value's family: the prefix before its last '-' (the value itself when it has none)."""
    head, sep, _ = value.rpartition("-")
    return head if sep and head else value


class FeedbackDetector(Detector):
    """A base detector plus what analyst verdicts teach (1 = malicious, 0 = benign)."""

    name = "feedback"

    def __init__(
        self,
        entity_types: Sequence[str],
        base: str = "outrider",
        base_config: dict[str, Any] | None = None,
        pattern_weight: float = 0.1,
        lift_weight: float = 0.25,
        lift_types: Sequence[str] | None = None,
        sink_types: Sequence[str] | None = None,
        time_weight: float = 0.0,
        time_scale_s: float = 300.0,
        time_other_than: str | None = None,
        time_same: str | None = None,
        time_by_group: bool = False,
        sink_weight: float = 1.0,
        sink_min_types: int = 1,
        alpha: float = 1.0,
        family_types: Sequence[str] = (),
        rank_types: Sequence[str] | None = None,
        mmr_lambda: float = 2.0,
        mmr_bucket_s: float = 3600.0,
        mmr_burst: float = 0.0,
        chronic_weight: float = 0.0,
        burst_bucket_s: float = 600.0,
        cofire_sim: float = 0.0,
        cofire_s: float = 5.0,
        cofire_types: Sequence[str] = (),
        max_patterns: int = 200_000,
        max_malicious_times: int = 50_000,
    ) -> None:
        super().__init__(entity_types)
        from detectors.registry import DETECTORS  # the registry imports this module

        if base not in DETECTORS or base == self.name:
            raise ValueError(f"unknown base detector {base!r}")
        unknown = set(family_types) - set(self.entity_types)
        if time_other_than is not None and time_same is not None:
            raise ValueError("time_other_than and time_same exclude each other")
        for t in (time_other_than, time_same):
            if t is not None:
                unknown |= {t} - set(self.entity_types)
        unknown |= set(cofire_types) - set(self.entity_types)
        if rank_types is not None:
            unknown |= set(rank_types) - set(self.entity_types)
        unknown |= (set(lift_types or ()) | set(sink_types or ())) - set(self.entity_types)
        if unknown:
            raise ValueError(f"unknown entity types {sorted(unknown)}")
        self.config: dict[str, Any] = {
            "base": base, "base_config": dict(base_config or {}),
            "pattern_weight": float(pattern_weight), "lift_weight": float(lift_weight),
            "lift_types": None if lift_types is None else list(lift_types),
            "sink_types": None if sink_types is None else list(sink_types),
            "time_weight": float(time_weight),
            "time_scale_s": float(time_scale_s), "time_other_than": time_other_than,
            "time_same": time_same, "time_by_group": bool(time_by_group),
            "sink_weight": float(sink_weight),
            "sink_min_types": int(sink_min_types), "alpha": float(alpha),
            "family_types": list(family_types),
            "rank_types": None if rank_types is None else list(rank_types),
            "mmr_lambda": float(mmr_lambda), "mmr_bucket_s": float(mmr_bucket_s),
            "mmr_burst": float(mmr_burst), "chronic_weight": float(chronic_weight),
            "burst_bucket_s": float(burst_bucket_s), "cofire_sim": float(cofire_sim),
            "cofire_s": float(cofire_s), "cofire_types": list(cofire_types),
            "max_patterns": int(max_patterns), "max_malicious_times": int(max_malicious_times),
        }  # fmt: skip
        self.base: Detector = DETECTORS[base](self.entity_types, **self.config["base_config"])
        self._fam = [self.entity_types.index(t) for t in family_types]
        self.center_, self.scale_ = 0.0, 1.0
        self.patterns_: set[str] = set()  # distinct patterns seen (document frequency)
        self.df_: dict[str, int] = {}  # token -> distinct patterns carrying it
        self.labeled_: dict[str, int] = {}  # distinct labeled pattern -> latest verdict
        self.malicious_times_ = np.zeros(0, dtype=np.float64)  # sorted
        self.malicious_where_: list[str] = []  # `time_other_than` / `time_same` value of each
        self.malicious_keys_: list[str] = []  # the labeled pattern each time came from
        self._weights: dict[str, float] | None = None

    # -- tokens ---------------------------------------------------------------------------
    def tokens(self, row: Sequence[str]) -> list[str]:
        """The pattern tokens of one event (see the module docstring)."""
        row = pattern_key(row).split(_SEP) if row else []  # values, escaped
        vals = [f"{j}={v}" for j, v in enumerate(row)]
        for j in self._fam:
            vals.append(f"{j}~{family(row[j])}")
        return vals + [a + _SEP + b for a, b in combinations(vals, 2)]

    def observe_patterns(self, rows: Iterable[Sequence[str]]) -> None:
        """Count the distinct patterns behind the tokens' specificity (no base learning): the
        service calls it with every scored batch, so flagged patterns count too."""
        cap = self.config["max_patterns"]
        for row in rows:
            key = pattern_key(row)
            if key in self.patterns_ or len(self.patterns_) >= cap:
                continue
            self.patterns_.add(key)
            for t in self.tokens(row):
                self.df_[t] = self.df_.get(t, 0) + 1
        self._weights = None

    def _token_weights(self) -> dict[str, float]:
        """Specificity x smoothed log-odds of every token carried by a labeled pattern."""
        if self._weights is not None:
            return self._weights
        mal: dict[str, int] = {}
        ben: dict[str, int] = {}
        for key, y in self.labeled_.items():
            into = mal if y == 1 else ben
            for t in self.tokens(pattern_row(key)):
                into[t] = into.get(t, 0) + 1
        a = self.config["alpha"]
        n = len(self.patterns_)
        lift, sink = self._allowed("lift_types"), self._allowed("sink_types")
        sink_min = self.config.get("sink_min_types", 1)
        sink_w = self.config.get("sink_weight", 1.0)
        w = {}
        for t in set(mal) | set(ben):
            lo = float(np.log((mal.get(t, 0) + a) / (ben.get(t, 0) + a)))
            cols = {int(_COLUMN.match(part)[0]) for part in t.split(_SEP)}  # type: ignore[index]
            if (lo > 0 and not cols <= lift) or (
                lo < 0 and (not cols <= sink or len(cols) < sink_min)
            ):
                continue
            idf = np.log((n + 1.0) / (self.df_.get(t, 0) + 1.0)) + 1.0
            w[t] = idf * lo * (self.config["lift_weight"] if lo > 0 else sink_w)
        self._weights = w
        return w

    def _allowed(self, option: str) -> set[int]:
        types = self.config.get(option)
        if types is None:
            return set(range(len(self.entity_types)))
        return {self.entity_types.index(t) for t in types}

    # -- learning -------------------------------------------------------------------------
    def learn_many(self, batch: EventBatch) -> None:
        """Unsupervised update of the base detector; remembers the batch's patterns."""
        self._check(batch)
        if len(batch) == 0:
            return
        self.base.learn_many(batch)
        self.events_seen_ = self.base.events_seen_
        self.observe_patterns(dict.fromkeys(map(tuple, batch.rows)))
        step = max(1, len(batch) // 20_000)
        sample = EventBatch(batch.entity_types, batch.rows[::step], batch.times[::step])
        s = self.base.peek_many(sample)
        s = s[np.isfinite(s)]
        if len(s) > 1:
            self.center_, self.scale_ = float(np.median(s)), float(s.std() + 1e-9)

    def learn_labels(self, batch: EventBatch, labels: np.ndarray | Sequence[int]) -> None:
        """Analyst verdicts, one per event: 1 = malicious, 0 = benign. A later verdict on the
        same pattern replaces an earlier one (an analyst's undo is a new verdict)."""
        self._check(batch)
        labels = np.asarray(labels)
        if len(labels) != len(batch):
            raise ValueError(f"{len(labels)} labels for {len(batch)} events")
        if len(batch) == 0:
            return
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be 1 (malicious) or 0 (benign)")
        self.observe_patterns(map(tuple, batch.rows))
        keys = [pattern_key(row) for row in batch.rows]
        for key, y in zip(keys, labels.tolist(), strict=True):
            self.labeled_[key] = int(y)
        # a pattern's times are those of its latest malicious verdict: a benign one (or a
        # new malicious one) replaces what an earlier verdict on it said
        relabeled = set(keys)
        col = self._where_col()
        times = np.asarray(batch.times, np.float64)
        kept = {
            (t, w, k)
            for t, w, k in zip(self.malicious_times_.tolist(), self.malicious_where_,
                               self.malicious_keys_, strict=True)
            if k not in relabeled
        }  # fmt: skip
        kept |= {(float(times[i]), batch.rows[i][col] if col >= 0 else "", keys[i])
                 for i in np.flatnonzero(labels == 1).tolist()}  # fmt: skip
        self._set_malicious(sorted(kept)[-self.config["max_malicious_times"] :])
        self._weights = None

    #: options that may change on a trained learner: they shape how verdicts generalise, not
    #: what was learned
    RECONFIGURABLE = frozenset(
        {"time_weight", "time_scale_s", "time_same", "lift_weight", "sink_min_types"}
    )

    def reconfigure(self, **options: Any) -> None:
        """Change how the verdicts learned so far generalise (a restored learner under new
        settings); only `RECONFIGURABLE` options."""
        unknown = set(options) - self.RECONFIGURABLE
        if unknown:
            raise ValueError(f"not reconfigurable: {sorted(unknown)}")
        same = options.get("time_same")
        if same is not None and same not in self.entity_types:
            raise ValueError(f"unknown entity type {same!r}")
        if same is not None and self.config["time_other_than"] is not None:
            raise ValueError("time_other_than and time_same exclude each other")
        self.config.update(options)
        self._weights = None

    def forget(self, row: Sequence[str]) -> bool:
        """Drop the verdict on one pattern (an analyst's undo) and the times it confirmed;
        True if there was one."""
        key = pattern_key(row)
        if self.labeled_.pop(key, None) is None:
            return False
        self._set_malicious([
            (t, w, k)
            for t, w, k in zip(self.malicious_times_.tolist(), self.malicious_where_,
                               self.malicious_keys_, strict=True)
            if k != key
        ])  # fmt: skip
        self._weights = None
        return True

    def _set_malicious(self, triples: Sequence[tuple[float, str, str]]) -> None:
        """Confirmed-malicious (time, where, pattern) triples, sorted by time."""
        self.malicious_times_ = np.array([t for t, _, _ in triples], dtype=np.float64)
        self.malicious_where_ = [w for _, w, _ in triples]
        self.malicious_keys_ = [k for _, _, k in triples]

    # -- scoring --------------------------------------------------------------------------
    def pattern_term(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        """Per event: the sum of its tokens' learned weights (0 without labels)."""
        out = np.zeros(len(rows))
        if not self.labeled_ or not len(rows):
            return out
        w = self._token_weights()
        cache: dict[tuple[str, ...], float] = {}
        for i, row in enumerate(rows):
            key = tuple(row)
            v = cache.get(key)
            if v is None:
                v = cache[key] = sum(w.get(t, 0.0) for t in self.tokens(key))
            out[i] = v
        return out

    def _where_col(self) -> int:
        t = self.config["time_other_than"] or self.config.get("time_same")
        return -1 if t is None else self.entity_types.index(t)

    @staticmethod
    def _proximity(times: np.ndarray, mt: np.ndarray, scale: float) -> np.ndarray:
        if len(mt) == 0:
            return np.zeros(len(times))
        i = np.searchsorted(mt, times)
        left = np.abs(times - mt[np.clip(i - 1, 0, len(mt) - 1)])
        right = np.abs(mt[np.clip(i, 0, len(mt) - 1)] - times)
        return np.exp(-np.minimum(left, right) / scale)

    def time_term(
        self, times: np.ndarray, rows: Sequence[Sequence[str]] | None = None
    ) -> np.ndarray:
        """Per event: exp(-distance to the nearest malicious-labeled time / time_scale_s);
        with `time_other_than` set (and `rows` given), only malicious events whose value of
        that type differs from the event's count (evidence from elsewhere, not the burst
        the analyst already read); with `time_same`, only those whose value is the event's
        (this host, around the time it was confirmed attacked)."""
        times = np.asarray(times, np.float64)
        scale = self.config["time_scale_s"]
        mt = self.malicious_times_
        if len(mt) == 0 or len(times) == 0:
            return np.zeros(len(times))
        col = self._where_col()
        if col < 0 or rows is None:
            return self._proximity(times, mt, scale)
        # where each confirmed time was: read from its pattern (so a learner reconfigured to
        # another `time_same` type still knows), else as recorded (states before 2026-12-04)
        where = np.array(
            [pattern_row(k)[col] if k else w
             for k, w in zip(self.malicious_keys_, self.malicious_where_, strict=True)],
            dtype=object,
        )  # fmt: skip
        vals = np.array([r[col] for r in rows], dtype=object)
        out = np.zeros(len(times))
        same = self.config.get("time_same") is not None
        for v in set(vals.tolist()):
            sel = vals == v
            near = (where == v) if same else (where != v)
            out[sel] = self._proximity(times[sel], mt[near], scale)
        return out

    def adjustment(self, batch: EventBatch) -> np.ndarray:
        """What the verdicts add to the standardised base score (zeros without labels)."""
        cfg = self.config
        adj = np.zeros(len(batch))
        if cfg["pattern_weight"]:
            adj += cfg["pattern_weight"] * self.pattern_term(batch.rows)
        if cfg["time_weight"]:
            adj += cfg["time_weight"] * self.time_term(batch.times, batch.rows)
        return adj

    def score_many(self, batch: EventBatch, base_scores: np.ndarray | None = None) -> np.ndarray:
        """z(base score) + what the verdicts add. `base_scores`: the base detector's scores of
        this batch when already computed (a base with time context advances it when it scores,
        so a batch re-ranked after new verdicts should reuse its first base scores)."""
        self._check(batch)
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float64)
        base = self.base.score_many(batch) if base_scores is None else np.asarray(base_scores)
        if len(base) != len(batch):
            raise ValueError(f"{len(base)} base scores for {len(batch)} events")
        z = (base - self.center_) / self.scale_
        return z + self.adjustment(batch)

    def similarity_key(self, key: Sequence[str]) -> tuple[str, ...]:
        """What MMR compares between two groups: `rank_types` values and the families."""
        cols = (
            range(len(self.entity_types))
            if self.config["rank_types"] is None
            else [self.entity_types.index(t) for t in self.config["rank_types"]]
        )
        return tuple(key[j] for j in cols) + tuple(family(key[j]) for j in self._fam)

    def rank(
        self,
        batch: EventBatch,
        scores: np.ndarray | None = None,
        shown: Sequence[int] = (),
        base_scores: np.ndarray | None = None,
    ) -> RankedGroups:
        """Groups of a batch in reading order; `shown` = group ids the analyst has read;
        `base_scores` as in `score_many`. With `time_by_group` (and `scores` not given), an
        alert's time term is the mean over its group's alerts: a group is part of a confirmed
        attack by the share of its alerts around it, so a chronic group with one alert in that
        hour stays down."""
        cfg = self.config
        if scores is None:
            scores = self.score_many(batch, base_scores)
            if cfg.get("time_by_group") and cfg["time_weight"] and len(batch):
                t = self.time_term(batch.times, batch.rows)
                group_of, _ = group_alerts(batch.rows)
                sums = np.bincount(group_of, weights=t)
                mean = sums / np.bincount(group_of, minlength=len(sums))
                scores = scores + cfg["time_weight"] * (mean[group_of] - t)
        boost = getattr(self.base, "stream_boost", None)  # OutriderDetector's stream context
        if boost is not None:
            scores = scores + boost(batch) / self.scale_  # in base-score units, as z is
        return rank_groups(
            batch.rows, batch.times, scores, lam=cfg["mmr_lambda"],
            bucket_s=cfg["mmr_bucket_s"], shown=shown, similarity_key=self.similarity_key,
            burst_sim=cfg.get("mmr_burst", 0.0), burst_bucket_s=cfg.get("burst_bucket_s", 600.0),
            chronic_weight=cfg.get("chronic_weight", 0.0), cofire_sim=cfg.get("cofire_sim", 0.0),
            cofire_s=cfg.get("cofire_s", 5.0), cofire_key=self.cofire_key,
        )  # fmt: skip

    def cofire_key(self, key: Sequence[str]) -> tuple[str, ...]:
        """What two co-firing groups must share to count as one event: `cofire_types`."""
        return tuple(key[self.entity_types.index(t)] for t in self.config.get("cofire_types", ()))

    def explain_many(self, batch: EventBatch, top_k: int = 3) -> list[Explanation]:
        return self.base.explain_many(batch, top_k)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        base_arrays, base_meta = self.base.state_dict()
        arrays = {f"base.{k}": v for k, v in base_arrays.items()}
        patterns = sorted(self.patterns_)
        labeled = list(self.labeled_)
        arrays["fb.labels"] = np.array([self.labeled_[k] for k in labeled], dtype=np.int64)
        arrays["fb.malicious_times"] = self.malicious_times_.copy()
        meta = {
            "detector": self.name,
            "state_format": STATE_FORMAT,
            "entity_types": list(self.entity_types),
            "config": self.config,
            "base": base_meta,
            "center": self.center_,
            "scale": self.scale_,
            "patterns": patterns,
            "labeled": labeled,
            "malicious_where": self.malicious_where_,
            "malicious_keys": self.malicious_keys_,
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> FeedbackDetector:
        cls.check_state(meta)
        det = cls(meta["entity_types"], **meta["config"])
        base_arrays = arrays_under(arrays, "base.")
        det.base = type(det.base).from_state(base_arrays, meta["base"])
        det.events_seen_ = det.base.events_seen_
        det.center_, det.scale_ = float(meta["center"]), float(meta["scale"])
        labels = np.asarray(arrays["fb.labels"]).tolist()
        if len(labels) != len(meta["labeled"]):
            raise ValueError("feedback labels do not match their patterns")
        det.observe_patterns(pattern_row(p) for p in meta["patterns"])
        det.labeled_ = dict(zip(meta["labeled"], (int(y) for y in labels), strict=True))
        det.malicious_times_ = np.asarray(arrays["fb.malicious_times"], np.float64).copy()
        det.malicious_where_ = list(meta["malicious_where"])
        # states before 2026-12-04 lack the patterns: their times stay until evicted
        det.malicious_keys_ = list(meta.get("malicious_keys", [""] * len(det.malicious_where_)))
        if not len(det.malicious_where_) == len(det.malicious_keys_) == len(det.malicious_times_):
            raise ValueError("malicious times do not match their places")
        return det


def select_queries(
    keys: Sequence[Sequence[str]],
    scores: np.ndarray,
    k: int = 3,
    threshold: float | None = None,
    exclude: Iterable[int] = (),
    pool: int = 4,
) -> list[int]:
    """Group ids worth an analyst's verdict: near the alert threshold and unlike each other.

    `keys`: each group's entity tuple; `scores`: each group's score; `threshold`: the alert
    threshold on the same scale (default: the 95th percentile of `scores`); `exclude`: groups
    already labeled or already shown as top-ranked. The `pool * k` groups closest to the
    threshold are candidates; the first pick is the closest, each next one the candidate
    farthest (in squared distance over one-hot entity fields plus the score gap to the
    threshold, in units of the score spread) from every pick so far: k-means++ seeding made
    deterministic (ties: closer to the threshold, then lower id).
    """
    scores = np.asarray(scores, np.float64)
    n = len(scores)
    skip = set(int(g) for g in exclude)
    cand = np.array([g for g in range(n) if g not in skip and np.isfinite(scores[g])], np.int64)
    if k <= 0 or len(cand) == 0:
        return []
    if threshold is None:
        threshold = float(np.quantile(scores[np.isfinite(scores)], 0.95))
    spread = float(scores[cand].std()) or 1.0
    gap = np.abs(scores[cand] - threshold) / spread
    keep = np.lexsort((cand, gap))[: max(k, pool * k)]
    cand, gap = cand[keep], gap[keep]
    fields = np.array([list(keys[g]) for g in cand], dtype=object)
    m = fields.shape[1] if fields.ndim == 2 else 1
    picks = [0]
    dist = np.full(len(cand), np.inf)
    while len(picks) < min(k, len(cand)):
        h = picks[-1]
        d = (fields != fields[h]).sum(axis=1) * (2.0 / m) + (gap - gap[h]) ** 2
        dist = np.minimum(dist, d)
        dist[picks] = -np.inf
        best = np.flatnonzero(dist == dist.max())
        picks.append(int(best[np.argmin(gap[best])]))  # candidates are sorted by gap, id
    return [int(cand[p]) for p in picks]
