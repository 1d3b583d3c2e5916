"""Alert groups: one row per anomalous pattern, ranked, so an analyst reads distinct threats.

Every alert still goes to the alerts topic (nothing is dropped by grouping); the group book
folds them: the alert carries its group's rank and how many alerts the group has folded, the
digest and the triage page list groups, and a verdict on a group or on any of its alert ids
resolves here to the pattern the model should learn from.
"""

from __future__ import annotations

import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import numpy as np

from detectors.feedback import select_queries
from detectors.ranking import mmr_order
from service.settings import Settings
from service.triage import blamed_pairs, describe_pair, group_row, rarest_value

#: the service's defaults (`--group-diversity`, `--group-cofire-s`, `--group-cofire-fields`):
#: the terminal board ranks as the service does
DIVERSITY: float = Settings.model_fields["group_diversity"].default
COFIRE_S: float = Settings.model_fields["group_cofire_s"].default
COFIRE_FIELDS: str = Settings.model_fields["group_cofire_fields"].default
#: how alike two co-firing groups count in the MMR, at full overlap (as alike as two groups
#: sharing every field in the same hours, 1.0, and then some: bench/README.md)
COFIRE_WEIGHT = 1.5
#: seconds a group keeps of when its alerts fired, for co-firing (each with how many alerts
#: fired in it; an alert storm is few seconds): in memory / in its checkpointed state
KEEP_SECONDS, SAVE_SECONDS = 512, 16

_SEVERITY_RANK = {"critical": 3, "high": 2, "medium": 1, "low": 0}
_SEVERITY_NAME = {rank: name for name, rank in _SEVERITY_RANK.items()}


@dataclass
class GroupState:
    group_id: str
    kind: str
    entities: dict[str, str]
    top_score: float
    percentile: float
    severity: str
    first_seen: float
    last_seen: float
    count: int = 0
    why: str = ""
    last_alert_id: str = ""
    verdict: str | None = None
    alert_ids: list[str] = field(default_factory=list)  # the newest few, for the page
    buckets: list[int] = field(default_factory=list)  # time buckets it fired in (newest 64)
    # when its alerts fired: event-time seconds (newest KEEP_SECONDS runs) and alerts in each
    seconds: array = field(default_factory=lambda: array("q"))
    fired: array = field(default_factory=lambda: array("q"))
    model_score: float | None = None  # the pattern's score under the newest fine-tune
    verdict_note: str = ""  # what the verdicts did to its score, for the analyst
    # a stream alert's finding (service/stream_stage.py): how far it lifts the group among
    # the unread ones (in standard deviations of their scores) and what it says
    stream_lift: float = 0.0
    stream_note: str = ""

    def fired_at(self, most: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """When its alerts fired: seconds, sorted, and how many alerts in each; with `most`,
        at most that many seconds, evenly spaced, first and last kept."""
        seconds = np.frombuffer(self.seconds, dtype=np.int64).astype(np.float64)
        fired = np.frombuffer(self.fired, dtype=np.int64).astype(np.float64)
        order = np.argsort(seconds, kind="stable")
        if most is not None and len(order) > most:
            order = order[np.unique(np.linspace(0, len(order) - 1, most).round().astype(int))]
        return seconds[order], fired[order]

    @property
    def reason(self) -> str:
        """Why the group is here, for the analyst: a stream finding first, then the model's
        explanation of its top alert."""
        return "; ".join(p for p in (self.stream_note, self.why) if p)

    @property
    def ranking_score(self) -> float:
        """What ranks the group: its pattern's score under the newest fine-tune, or, before
        any, its highest alert score."""
        return self.top_score if self.model_score is None else self.model_score


class GroupBook:
    """Groups by id (bounded: the least recently alerted are forgotten first) and the map
    from alert id to group id (bounded too).

    Ranking is diverse, not by score alone: the `mmr_top` highest-scoring groups are ordered
    by time-aware maximal marginal relevance (detectors/ranking.py `mmr_order`: a group that
    shares entity values and time buckets with one ranked above it waits), so the first groups
    an analyst reads are distinct threats rather than one incident's many patterns; the rest
    follow by score, benign verdicts last. `mmr_lambda=0` ranks by score alone.
    """

    def __init__(
        self,
        max_groups: int = 50_000,
        max_alert_ids: int = 500_000,
        mmr_lambda: float = DIVERSITY,
        bucket_s: float = 3600.0,
        mmr_top: int = 100,
        rerank_s: float = 1.0,
        cofire_s: float = COFIRE_S,
        cofire_fields: str | Sequence[str] = COFIRE_FIELDS,
    ) -> None:
        self.max_groups = max_groups
        self.max_alert_ids = max_alert_ids
        self.mmr_lambda, self.bucket_s, self.mmr_top = mmr_lambda, bucket_s, mmr_top
        self.cofire_s = cofire_s
        if isinstance(cofire_fields, str):
            cofire_fields = [f.strip() for f in cofire_fields.split(",") if f.strip()]
        self.cofire_fields = tuple(cofire_fields)
        self.rerank_s = rerank_s  # alerts' group_rank is at most this stale (MMR costs ms)
        self.groups: OrderedDict[str, GroupState] = OrderedDict()
        self.group_of_alert: OrderedDict[str, str] = OrderedDict()
        self._ranks: dict[str, int] = {}
        self._ranked: list[GroupState] = []
        self._ranked_at = -float("inf")
        self._dirty = False

    def add(self, alert: dict[str, Any]) -> None:
        """Fold one alert; annotates the alert dict with `group_count` (a redelivered alert
        id is not counted twice)."""
        self.add_many([alert])

    def add_many(self, alerts: Sequence[dict[str, Any]]) -> None:
        """Fold a batch's alerts as `add` one after another would, a group at a time: an
        alert storm is thousands of alerts of a few patterns, and the per-alert work is then
        only the alert id's bookkeeping and its `group_count`. One difference: the map of
        alert ids is trimmed to `max_alert_ids` after the batch, not alert by alert (a
        redelivered id is recognised at least as long)."""
        if not alerts:
            return
        by_group: dict[str, list[dict[str, Any]]] = {}
        for alert in alerts:
            by_group.setdefault(alert["group_id"], []).append(alert)
        new = by_group.keys() - self.groups.keys()
        if len(alerts) > 1 and len(self.groups) + len(new) > self.max_groups:
            for alert in alerts:  # a group may be evicted mid-batch: one alert at a time
                self.add_many([alert])
            return
        for gid, group in by_group.items():
            first = group[0]
            if gid not in self.groups:
                self.groups[gid] = GroupState(
                    gid, first["kind"], dict(first["entities"]), first["score"],
                    first["percentile"], first["severity"], first["event_time"],
                    first["event_time"],
                )  # fmt: skip
        # alert ids in alert order (the map's order is what it forgets first)
        known, groups = self.group_of_alert, self.groups
        count = {gid: groups[gid].count for gid in by_group}
        added: dict[str, list[str]] = {gid: [] for gid in by_group}
        for alert in alerts:
            aid, gid = alert["alert_id"], alert["group_id"]
            if aid not in known:
                count[gid] += 1
                added[gid].append(aid)
                known[aid] = gid
            alert["group_count"] = count[gid]
        for gid, group in by_group.items():
            g = groups[gid]
            if added[gid]:
                g.count = count[gid]
                g.alert_ids = [*g.alert_ids, *added[gid]][-10:]
            self._fold_group(g, group)
        # recency: the groups in the order of their last alert, the least recent forgotten
        last = {a["group_id"]: i for i, a in enumerate(alerts)}
        for gid in sorted(last, key=last.__getitem__):
            self.groups.move_to_end(gid)
        while len(self.groups) > self.max_groups:
            self.groups.popitem(last=False)
        while len(self.group_of_alert) > self.max_alert_ids:
            self.group_of_alert.popitem(last=False)
        self._dirty = True

    def _fold_group(self, g: GroupState, group: list[dict[str, Any]]) -> None:
        """What a group keeps of a batch's alerts, but their ids (see `add_many`)."""
        times = [a["event_time"] for a in group]
        for second, run in groupby(map(int, times)):  # when they fired, run by run
            n = len(list(run))
            if g.seconds and g.seconds[-1] == second:
                g.fired[-1] += n
            else:
                g.seconds.append(second)
                g.fired.append(n)
                if len(g.seconds) >= 2 * KEEP_SECONDS:
                    del g.seconds[:-KEEP_SECONDS], g.fired[:-KEEP_SECONDS]
        for bucket, _ in groupby(int(t // self.bucket_s) for t in times):
            if bucket not in g.buckets:
                g.buckets = [*g.buckets[-63:], bucket]
        g.first_seen = min(g.first_seen, *times)
        g.last_seen = max(g.last_seen, *times)
        g.last_alert_id = group[-1]["alert_id"]
        scores = [a["score"] for a in group]
        if g.model_score is not None:
            g.model_score = max(g.model_score, *scores)
        top, why, pct = g.top_score, g.why, g.percentile
        for alert, score in zip(group, scores, strict=True):  # a storm's scores are equal
            if score >= top or not why:
                if score > top or not why:
                    why = _why(alert)
                top = max(top, score)
                pct = max(pct, alert["percentile"])
        g.top_score, g.why, g.percentile = top, why, pct
        for alert in group:
            found = (alert.get("attributes") or {}).get("stream_context")
            if found and found.get("lift", 0.0) >= g.stream_lift:
                g.stream_lift, g.stream_note = float(found["lift"]), str(found["note"])
        worst = max(_SEVERITY_RANK[a["severity"]] for a in group)
        if worst > _SEVERITY_RANK[g.severity]:
            g.severity = _SEVERITY_NAME[worst]

    def state(self, max_groups: int = 10_000, max_alert_ids: int = 50_000) -> dict[str, Any]:
        """The most recent groups and alert ids as JSON, saved with the model: a verdict on a
        group seen before a restart must still resolve after it."""
        groups = list(self.groups.values())[-max_groups:]
        alert_ids = list(self.group_of_alert.items())[-max_alert_ids:]
        return {
            "format": "outrider.groups/1",
            "groups": [
                {
                    **vars(g),
                    "seconds": g.seconds[-SAVE_SECONDS:].tolist(),
                    "fired": g.fired[-SAVE_SECONDS:].tolist(),
                }
                for g in groups
            ],
            "alert_ids": alert_ids,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any], **options: Any) -> GroupBook:
        if d.get("format") != "outrider.groups/1":
            raise ValueError(f"not a group book state: {d.get('format')!r}")
        book = cls(**options)
        for g in d["groups"]:
            seconds, fired = array("q", g.pop("seconds", ())), array("q", g.pop("fired", ()))
            # older states lack buckets, seconds and fired
            book.groups[g["group_id"]] = GroupState(**g, seconds=seconds, fired=fired)
        book.group_of_alert.update((a, gid) for a, gid in d["alert_ids"])
        book._dirty = True
        return book

    def resolve(self, target_id: str) -> GroupState | None:
        """The group a verdict names, by group id or by any of its alert ids."""
        gid = self.group_of_alert.get(target_id, target_id)
        return self.groups.get(gid)

    def knows(self, target_id: str) -> bool:
        return self.resolve(target_id) is not None

    def ranked(self) -> list[GroupState]:
        """Groups in reading order: distinct threats first, benign verdicts last."""
        if self._dirty:
            self._rerank()
        return self._ranked

    def rank_of(self, group_id: str) -> int:
        """The group's rank (0 = not ranked yet); re-ranked at most every `rerank_s`."""
        if self._dirty and time.monotonic() - self._ranked_at >= self.rerank_s:
            self._rerank()
        return self._ranks.get(group_id, 0)

    def _rerank(self) -> None:
        """Read groups an analyst did not call benign first (confirmed threats), then the
        unread ones: the top `mmr_top` by time-aware MMR, read groups counting as already
        shown (so the incident just confirmed does not fill the next page), the rest by
        score; benign verdicts last."""
        benign = ("benign_positive", "false_positive")

        # a stream finding lifts a group by its lift x the spread of the groups' scores
        spread = float(np.std([g.ranking_score for g in self.groups.values()])) or 1.0

        def score(g: GroupState) -> float:
            return g.ranking_score + g.stream_lift * spread

        def order_key(g: GroupState) -> tuple:
            return (-score(g), -g.count, g.group_id)

        read = sorted((g for g in self.groups.values() if g.verdict and g.verdict not in benign),
                      key=order_key)  # fmt: skip
        unread = sorted((g for g in self.groups.values() if not g.verdict), key=order_key)
        sunk = sorted((g for g in self.groups.values() if g.verdict in benign), key=order_key)
        head, tail = unread[: self.mmr_top], unread[self.mmr_top :]
        if self.mmr_lambda > 0 and len(head) > 1:
            cand = read + head
            # compare "type=value" fields position by position; pad with values unique to
            # the group, so groups of kinds with fewer entities share nothing there
            width = max(len(g.entities) + 1 for g in cand)
            keys = [
                [f"kind={g.kind}", *(f"{t}={v}" for t, v in sorted(g.entities.items()))]
                for g in cand
            ]
            keys = [k + [f"\x00{g.group_id}{i}" for i in range(width - len(k))]
                    for k, g in zip(keys, cand, strict=True)]  # fmt: skip
            order = mmr_order(
                np.array([score(g) for g in cand]), keys,
                [set(g.buckets) for g in cand], lam=self.mmr_lambda, shown=range(len(read)),
                **self._cofire(cand),
            )  # fmt: skip
            head = [cand[i] for i in order]
        self._ranked = read + head + tail + sunk
        self._ranks = {g.group_id: i for i, g in enumerate(self._ranked, 1)}
        self._ranked_at = time.monotonic()
        self._dirty = False

    def _cofire(self, cand: list[GroupState]) -> dict[str, Any]:
        """mmr_order's co-firing arguments: groups whose alerts fire within `cofire_s` of
        another's on a shared `cofire_fields` value are one action seen by several rules
        (one scan step tripping a dozen IDS and audit rules on one host), so once one of
        them is ranked the others wait. Measured through the service on AIT (bench.product):
        groups read to all steps but one, no verdicts, 12/48/26/23 -> 8/37/16/12."""
        if self.cofire_s <= 0 or not self.cofire_fields:
            return {}
        times = [g.fired_at() for g in cand]
        return {
            "group_times": [t for t, _ in times],
            "group_weights": [w for _, w in times],
            # a group without a value for a field shares nothing there: a value of its own
            "cofire_keys": [
                tuple(
                    f"{f}={g.entities[f]}" if g.entities.get(f) else "\x00" + g.group_id
                    for f in self.cofire_fields
                )
                for g in cand
            ],
            "cofire_s": self.cofire_s,
            "cofire_sim": COFIRE_WEIGHT,
        }

    def rescore(self, score: Callable[..., tuple[np.ndarray, list[str]]],
                types: Callable[[str], tuple[str, ...]]) -> int:  # fmt: skip
        """Re-score the unread groups with the model as it is now (after a fine-tune), so the
        queue reflects what the verdicts taught: look-alikes of a benign verdict sink, those
        of a malicious one rise, before any new alert. `score(kind, rows, fired)` scores
        patterns, given when each group's alerts fired, and says what the verdicts did to
        each (`Scorer.rescore_groups`); `types(kind)` is the kind's entity order. How many
        groups were re-scored."""
        by_kind: dict[str, list[GroupState]] = {}
        for g in self.groups.values():
            if not g.verdict:
                by_kind.setdefault(g.kind, []).append(g)
        for kind, groups in by_kind.items():
            order = types(kind)
            rows = [tuple(g.entities.get(t, "") for t in order) for g in groups]
            scores, notes = score(kind, rows, [g.fired_at() for g in groups])
            for g, value, note in zip(groups, scores.tolist(), notes, strict=True):
                g.model_score, g.verdict_note = value, note
        self._dirty = True
        return sum(len(v) for v in by_kind.values())

    def mark(self, target_id: str, verdict: str) -> GroupState | None:
        g = self.resolve(target_id)
        if g is not None:
            g.verdict = None if verdict == "undetermined" else verdict
            self._dirty = True
        return g


def group_book(settings: Settings, state: dict[str, Any] | None = None) -> GroupBook:
    """The group book as the settings rank it, restored from `state` when there is one."""
    options: dict[str, Any] = {
        "mmr_lambda": settings.group_diversity,
        "cofire_s": settings.group_cofire_s,
        "cofire_fields": settings.group_cofire_fields,
    }
    if state is None:
        return GroupBook(**options)
    return GroupBook.from_state(state, **options)


def _why(alert: dict[str, Any]) -> str:
    """'new: c=w; a=x with b=y: never seen together; rarest: host=z seen 3x' from an alert's
    explanation: a value never seen first, then the two pairs blamed most, then the rarest
    value (pairs seen no less often than chance are not blamed, so not shown: a rare value
    never seen with a host is what chance predicts; the value's rarity is the reason)."""
    rarest = rarest_value(alert)
    parts = []
    if rarest is not None and rarest["count"] == 0:
        parts.append(f"new: {rarest['type']}={rarest['value']}")
    parts += [describe_pair(p) for p in blamed_pairs(alert)[:2]]
    if rarest is not None and rarest["count"] > 0:
        parts.append(f"rarest: {rarest['type']}={rarest['value']} seen {rarest['count']:.0f}x")
    return "; ".join(parts)


def ask_flags(ranked: list[GroupState], threshold: float, top: int = 10, k: int = 3) -> set[str]:
    """Groups besides the top-ranked ones (an analyst reads those anyway) whose verdict would
    teach the model most: percentile near the alert threshold, patterns unlike each other
    (detectors.feedback.select_queries)."""
    pool = [g for g in ranked[top:] if g.verdict is None]
    if not pool:
        return set()
    width = max(len(g.entities) for g in pool)
    keys = [(g.kind, *g.entities.values(), *[""] * (width - len(g.entities))) for g in pool]
    scores = np.array([g.percentile for g in pool])
    return {pool[i].group_id for i in select_queries(keys, scores, k=k, threshold=threshold)}


def digest(
    book: GroupBook, model: dict[str, str], threshold: float, top: int = 20
) -> dict[str, Any]:
    """The periodic digest record: the top groups, then the ones the model asks about."""
    ranked = book.ranked()
    ask = ask_flags(ranked, threshold)
    rows = [group_row(g, g.verdict, g.group_id in ask) for g in ranked[:top]]
    rows += [group_row(g, g.verdict, True) for g in ranked[top:] if g.group_id in ask]
    return {"type": "digest", "time": time.time(), "model": model,
            "groups": len(book.groups), "top": rows}  # fmt: skip
