"""Group-level ranking of alerts for analysts, with diversity (time-aware MMR).

Analysts read groups, not events (the product lesson of CAR, Lin et al. CIKM 2018): a group is
the alerts with an identical entity tuple, its score the max of its alerts' scores. Ranking by
score alone fills the top of the queue with many groups from one incident (one host, one burst:
every novel web-server error of a scan). Maximal marginal relevance (Carbonell & Goldstein,
SIGIR 1998) re-ranks greedily by `score - lam * max similarity to the groups already shown`;
our similarity is the share of entity fields two groups have in common, weighted by how much
of the candidate's time (buckets of `bucket_s` seconds) the shown group also covers, so one
host's separate episodes stay apart while one burst collapses. The time weighting is our own
design; on AIT (protocol v2) it is what moved the hard steps up (see bench/README.md).

Three optional terms (our own; off by default, measured on AIT in bench/README.md):
- `burst_sim`: a group that fires in the same short buckets (`burst_bucket_s`) as a group
  already shown is alike by `burst_sim` x the share of its buckets the shown group covers, with
  no field in common: one scan touches many hosts with many alert codes at once, and the
  analyst who read one of its groups has seen that minute;
- `chronic_weight`: the group score is its max alert score minus `chronic_weight` x log(number
  of `burst_bucket_s` buckets the group fired in): attack steps come in few bursts, a group
  that fires all day is background even when its pattern is new;
- `cofire_sim` (co-firing groups are one event): a group whose alerts fall within `cofire_s`
  seconds of a shown group's alerts, sharing a `cofire_key` value (e.g. the same host), is
  alike by `cofire_sim` x the share of its alerts that do. Several sensors and rules fire on
  one action within seconds (a web scan raises Wazuh 400s, Wazuh "multiple 400s", AMiner
  new-value alerts on the same host at once): the analyst who read one of them has seen that
  action, while the same host's alerts minutes later are likely the attack's next step. On
  AIT (protocol v2, bench/README.md) `cofire_s=5`, `cofire_sim=1.5` on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class RankedGroups:
    """Groups in the order an analyst should read them."""

    order: np.ndarray  # group ids, first = read first
    group_of: np.ndarray  # group id of each alert
    scores: np.ndarray  # group score (max of its alerts, less the chronic term), by group id
    keys: list[tuple[str, ...]]  # entity tuple of each group id


def group_alerts(rows: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Group id per alert (identical entity tuple, numbered in first-seen order) and keys."""
    index: dict[tuple[str, ...], int] = {}
    ids = np.fromiter((index.setdefault(tuple(r), len(index)) for r in rows), np.int64, len(rows))
    return ids, list(index)


def _time_signatures(
    group_of: np.ndarray, times: np.ndarray, bucket_s: float, n: int
) -> list[set[int]]:
    buckets = np.floor((times - (times.min() if len(times) else 0.0)) / bucket_s).astype(np.int64)
    sig: list[set[int]] = [set() for _ in range(n)]
    for g, b in zip(group_of.tolist(), buckets.tolist(), strict=True):
        sig[g].add(b)
    return sig


def _group_times(group_of: np.ndarray, times: np.ndarray, n: int) -> list[np.ndarray]:
    """Each group's alert times, sorted."""
    order = np.lexsort((times, group_of))
    bounds = np.searchsorted(group_of[order], np.arange(n + 1))
    return [times[order[bounds[g] : bounds[g + 1]]] for g in range(n)]


def cofire_share(
    mine: np.ndarray, other: np.ndarray, within_s: float, weights: np.ndarray | None = None
) -> float:
    """Share of the (sorted) times `mine` that lie within `within_s` of a time in `other`;
    `weights`: how many alerts each of `mine` stands for (default one each)."""
    if len(mine) == 0 or len(other) == 0:
        return 0.0
    i = np.searchsorted(other, mine)
    left = np.abs(mine - other[np.clip(i - 1, 0, len(other) - 1)])
    right = np.abs(other[np.clip(i, 0, len(other) - 1)] - mine)
    near = np.minimum(left, right) <= within_s
    if weights is None:
        return float(near.mean())
    return float(weights[near].sum() / max(weights.sum(), 1e-12))


def mmr_order(
    scores: np.ndarray,
    keys: Sequence[Sequence[str]],
    signatures: Sequence[set[int]] | None = None,
    lam: float = 1.0,
    floor: float = 0.0,
    shown: Sequence[int] = (),
    burst_signatures: Sequence[set[int]] | None = None,
    burst_sim: float = 0.0,
    group_times: Sequence[np.ndarray] | None = None,
    cofire_keys: Sequence[Sequence[object]] | None = None,
    cofire_s: float = 0.0,
    cofire_sim: float = 0.0,
    group_weights: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Greedy MMR over groups; similarity = shared fields x (floor + (1-floor) x time overlap),
    or `burst_sim` x the share of the group's short buckets (`burst_signatures`) the other
    group covers, or `cofire_sim` x the share of the group's alerts within `cofire_s` seconds
    of the other group's alerts (`group_times`: sorted alert times per group) when both share
    a value at some position of their `cofire_keys` tuples (any two groups when the tuples are
    empty), whichever is largest; `group_weights`: alerts per entry of `group_times` (when
    each entry stands for several alerts at that time).

    `shown`: groups the analyst has already read; they are left out of the order, and the
    groups like them start with their penalty (read groups count as "already ranked").
    """
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    z = (scores - scores.mean()) / (scores.std() + 1e-12)  # lam is in units of score spread
    z = np.where(np.isfinite(z), z, -1e12)
    fields = np.array([list(k) for k in keys], dtype=object)
    penalty = np.zeros(n)
    left = np.ones(n, dtype=bool)
    cofire = cofire_sim > 0 and group_times is not None and cofire_keys is not None
    if cofire:
        assert group_times is not None and cofire_keys is not None
        first = np.array([t[0] if len(t) else np.inf for t in group_times])
        last = np.array([t[-1] if len(t) else -np.inf for t in group_times])
        width = len(cofire_keys[0]) if len(cofire_keys) else 0
        index: dict[object, int] = {}
        ckeys = np.array(
            [[index.setdefault((p, k[p]), len(index)) for p in range(width)] for k in cofire_keys],
            dtype=np.int64,
        ).reshape(n, width)

    def similarity(h: int) -> np.ndarray:
        shared = (fields == fields[h]).mean(axis=1)
        if signatures is not None:
            sh = signatures[h]
            overlap = np.array([len(s & sh) / max(len(s), 1) for s in signatures])
            shared = shared * (floor + (1.0 - floor) * overlap)
        if burst_sim > 0 and burst_signatures is not None:
            bh = burst_signatures[h]
            same = np.array([len(s & bh) / max(len(s), 1) for s in burst_signatures])
            shared = np.maximum(shared, burst_sim * same)
        if cofire:
            assert group_times is not None
            overlap = (first <= last[h] + cofire_s) & (last >= first[h] - cofire_s)
            near = (ckeys == ckeys[h]).any(axis=1) if width else np.ones(n, dtype=bool)
            near &= overlap
            near[h] = False
            share = np.zeros(n)
            for c in np.flatnonzero(near & left).tolist():
                weights = None if group_weights is None else group_weights[c]
                share[c] = cofire_share(group_times[c], group_times[h], cofire_s, weights)
            shared = np.maximum(shared, cofire_sim * share)
        return shared

    for h in sorted(set(int(g) for g in shown)):
        left[h] = False
        penalty = np.maximum(penalty, similarity(h))
    order = np.empty(int(left.sum()), dtype=np.int64)
    for r in range(len(order)):
        h = int(np.argmax(np.where(left, z - lam * penalty, -np.inf)))
        order[r] = h
        left[h] = False
        penalty = np.maximum(penalty, similarity(h))
    return order


def rank_groups(
    rows: Sequence[Sequence[str]],
    times: np.ndarray,
    scores: np.ndarray,
    lam: float = 1.0,
    bucket_s: float = 3600.0,
    floor: float = 0.0,
    shown: Sequence[int] = (),
    similarity_key: Callable[[tuple[str, ...]], Sequence[str]] | None = None,
    burst_sim: float = 0.0,
    burst_bucket_s: float = 600.0,
    chronic_weight: float = 0.0,
    cofire_sim: float = 0.0,
    cofire_s: float = 5.0,
    cofire_key: Callable[[tuple[str, ...]], Sequence[object]] | None = None,
) -> RankedGroups:
    """Group alerts, score groups by their max alert score, order them by time-aware MMR.

    `lam = 0` is the plain ranking by group score (ties: first-seen group first).
    `shown`: group ids already read (left out of `order`, and penalise their look-alikes);
    `similarity_key`: what MMR compares between two groups (default: the whole entity tuple);
    `burst_sim`, `burst_bucket_s`, `chronic_weight`, `cofire_sim`, `cofire_s`: see the module
    docstring; `cofire_key`: a group's values of which two co-firing groups must share one
    (default: none, any two groups).
    """
    group_of, keys = group_alerts(rows)
    n = len(keys)
    gs = np.full(n, -np.inf)
    np.maximum.at(gs, group_of, np.asarray(scores, dtype=np.float64))
    times = np.asarray(times, np.float64)
    bursts = None
    if (burst_sim > 0 or chronic_weight != 0) and n:
        bursts = _time_signatures(group_of, times, burst_bucket_s, n)
    if chronic_weight != 0 and bursts is not None:
        gs = gs - chronic_weight * np.log(np.array([max(len(b), 1) for b in bursts], float))
    if lam <= 0 or n == 0:
        order = np.lexsort((np.arange(n), -gs)).astype(np.int64)
        if len(shown):
            order = order[~np.isin(order, np.asarray(list(shown), dtype=np.int64))]
    else:
        sig = _time_signatures(group_of, times, bucket_s, n)
        sim_keys = keys if similarity_key is None else [tuple(similarity_key(k)) for k in keys]
        cofire = cofire_sim > 0
        order = mmr_order(
            gs, sim_keys, sig, lam=lam, floor=floor, shown=shown,
            burst_signatures=bursts, burst_sim=burst_sim,
            group_times=_group_times(group_of, times, n) if cofire else None,
            cofire_keys=[tuple(cofire_key(k)) if cofire_key else () for k in keys]
            if cofire
            else None,
            cofire_s=cofire_s, cofire_sim=cofire_sim,
        )  # fmt: skip
    return RankedGroups(order=order, group_of=group_of, scores=gs, keys=keys)
