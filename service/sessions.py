"""Session view for logs: group events by an identifier, score the session when it closes.

Some log anomalies live in a sequence, not a line: an HDFS block whose life misses a step or
takes an exception path looks normal line by line (Xu et al., SOSP 2009; loghub's HDFS labels
are per block, Zhu et al., ISSRE 2023). `SessionAggregator` keys events by an identifier (a
regex over the message such as the block id `blk_-?\\d+`, or an entity such as `user`), closes a
session after an idle gap in *event* time (or a maximum duration), and emits a `SessionRecord`
(its bag of templates); `SessionScorer` scores that bag. Pure Python, no Kafka: the pipeline
feeds it decoded events and publishes what it returns.
"""

from __future__ import annotations

import math
import re
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.frequency import keep_highest

SCORER_STATE_FORMAT = "outrider.session_scorer"
SCORER_STATE_VERSION = 1
OTHER = "<other>"


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """What keys a session and when it ends.

    `key_pattern` is searched in `key_field` (an attribute such as the raw message, or an
    entity type); every distinct match keys a session (an HDFS line may name several blocks).
    Without a pattern, the field's whole value is the key (a user, a session id).
    """

    key_field: str = "message"
    key_pattern: str | None = r"blk_-?\d+"
    idle_timeout_s: float = 300.0
    max_duration_s: float = 3600.0
    max_open: int = 100_000  # past this the least recently active session closes early
    max_keys_per_event: int = 16
    max_templates: int = 256  # distinct templates kept per session, the rest count as <other>

    def __post_init__(self) -> None:
        if self.idle_timeout_s <= 0 or self.max_duration_s <= 0 or self.max_open < 1:
            raise ValueError("timeouts and max_open must be positive")


@dataclass(slots=True)
class SessionRecord:
    """A closed (or still open) session: when, how many events, and which templates."""

    key: str
    start: float
    end: float
    count: int = 0
    template_counts: Counter[str] = field(default_factory=Counter)
    closed_by: str = "open"  # idle | max_duration | evicted | flush

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "start": self.start,
            "end": self.end,
            "count": self.count,
            "template_counts": dict(self.template_counts),
            "closed_by": self.closed_by,
        }


def _field(event: Any, name: str) -> Any:
    """`name` from an event's entities, then attributes; dicts and `schemas.Event` alike."""
    for part in ("entities", "attributes"):
        table = event.get(part) if isinstance(event, Mapping) else getattr(event, part, None)
        if table and name in table:
            return table[name]
    return None


def _time(event: Any) -> float:
    t = event.get("time") if isinstance(event, Mapping) else getattr(event, "time", None)
    return float(t or 0.0)


class SessionAggregator:
    """Open sessions by key; `add` returns the sessions that its event time closed."""

    def __init__(self, spec: SessionSpec | None = None) -> None:
        self.spec = spec or SessionSpec()
        self._pattern = re.compile(self.spec.key_pattern) if self.spec.key_pattern else None
        self._open: OrderedDict[str, SessionRecord] = OrderedDict()  # least recently active first
        self.watermark = -math.inf

    def __len__(self) -> int:
        return len(self._open)

    def keys_for(self, event: Any) -> list[str]:
        value = _field(event, self.spec.key_field)
        if value is None:
            return []
        text = str(value)
        if self._pattern is None:
            return [text[:1024]] if text else []
        keys = dict.fromkeys(m.group(0)[:1024] for m in self._pattern.finditer(text))
        return list(keys)[: self.spec.max_keys_per_event]

    def add(self, event: Any) -> list[SessionRecord]:
        """Add one event to its sessions; returns the sessions closed by time passing."""
        t = _time(event)
        template = str(_field(event, "template") or OTHER)
        closed: list[SessionRecord] = []
        for key in self.keys_for(event):
            rec = self._open.get(key)
            if rec is not None and t - rec.start > self.spec.max_duration_s:
                closed.append(self._close(key, "max_duration"))
                rec = None
            if rec is None:
                rec = self._open[key] = SessionRecord(key, t, t)
                if len(self._open) > self.spec.max_open:
                    closed.append(self._close(next(iter(self._open)), "evicted"))
            else:
                self._open.move_to_end(key)
            rec.start, rec.end = min(rec.start, t), max(rec.end, t)
            rec.count += 1
            counts = rec.template_counts
            if template in counts or len(counts) < self.spec.max_templates:
                counts[template] += 1
            else:
                counts[OTHER] += 1
        closed.extend(self.advance(t))
        return closed

    def advance(self, now: float) -> list[SessionRecord]:
        """Move event time to `now` (e.g. the wall clock on a quiet topic); close idle ones.

        Sessions are kept in order of last activity, so only the expired head is visited."""
        self.watermark = max(self.watermark, now)
        closed = []
        while self._open:
            key, rec = next(iter(self._open.items()))
            if self.watermark - rec.end <= self.spec.idle_timeout_s:
                break
            closed.append(self._close(key, "idle"))
        return closed

    def flush(self) -> list[SessionRecord]:
        """Close every open session (end of a replay, shutdown)."""
        return [self._close(k, "flush") for k in list(self._open)]

    def _close(self, key: str, why: str) -> SessionRecord:
        rec = self._open.pop(key)
        rec.closed_by = why
        return rec


class SessionScorer:
    """Bag-of-templates score: how rare is the rarest template this session contains.

    Document frequency over sessions (the share of sessions that contain a template), with
    add-one smoothing, so a template never seen in a session scores high and finitely. The
    score is the largest surprisal -log p(template in a session) in the bag, plus a small
    mean over the bag so that several uncommon templates outrank one. Higher = more anomalous.
    """

    name = "session-templates"

    def __init__(self, mean_weight: float = 0.1, max_templates: int = 100_000) -> None:
        self.mean_weight = float(mean_weight)
        self.max_templates = int(max_templates)
        self.df_: Counter[str] = Counter()
        self.sessions_seen_ = 0

    def learn_many(self, sessions: Iterable[SessionRecord]) -> None:
        for rec in sessions:
            self.df_.update(rec.template_counts.keys())
            self.sessions_seen_ += 1
        if len(self.df_) > self.max_templates:  # templates are minted as long as logs change
            self.df_ = keep_highest(self.df_, int(0.9 * self.max_templates))

    def _surprisal(self, template: str) -> float:
        return -math.log((self.df_.get(template, 0) + 1.0) / (self.sessions_seen_ + 2.0))

    def score_many(self, sessions: Sequence[SessionRecord]) -> np.ndarray:
        out = np.zeros(len(sessions), dtype=np.float64)
        for i, rec in enumerate(sessions):
            s = [self._surprisal(t) for t in rec.template_counts]
            if s:
                out[i] = max(s) + self.mean_weight * sum(s) / len(s)
        return out

    def explain(self, rec: SessionRecord, top_k: int = 3) -> list[tuple[str, float]]:
        """The session's rarest templates with their surprisal, rarest first."""
        scored = sorted(((t, self._surprisal(t)) for t in rec.template_counts), key=lambda x: -x[1])
        return scored[:top_k]

    def state(self) -> dict[str, Any]:
        return {
            "format": SCORER_STATE_FORMAT,
            "version": SCORER_STATE_VERSION,
            "mean_weight": self.mean_weight,
            "max_templates": self.max_templates,
            "sessions_seen": self.sessions_seen_,
            "df": dict(self.df_),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> SessionScorer:
        if d.get("format") != SCORER_STATE_FORMAT or d.get("version") != SCORER_STATE_VERSION:
            raise ValueError(f"not a {SCORER_STATE_FORMAT} v{SCORER_STATE_VERSION} state")
        scorer = cls(float(d["mean_weight"]), int(d.get("max_templates", 100_000)))
        scorer.sessions_seen_ = int(d["sessions_seen"])
        scorer.df_ = Counter({str(k): int(v) for k, v in d["df"].items()})
        return scorer
