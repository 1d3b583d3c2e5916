"""The optional session view: events keyed by an identifier (HDFS block id, session id, user)
are folded into sessions; a session is scored when it closes (idle timeout in event time, or
a maximum duration) and an unusual one becomes a session alert.

HDFS-style anomalies are properties of a block's whole life, not of any one line (Zhu et al.,
Loghub, ISSRE 2023), so they need this view beside the per-event one. Open sessions live in
memory only: a restart closes nothing and forgets open sessions (their events are still scored
one by one); see the issue note.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from detectors.calibration import QuantileCalibrator
from schemas import ModelRef
from schemas.base import SCHEMA_VERSION
from service.confidence import LOW_CONFIDENCE, confidence
from service.decode import DecodedEvent
from service.sessions import SessionAggregator, SessionRecord, SessionScorer, SessionSpec

SESSION_KIND = "session"


class SessionStage:
    """Aggregate, score on close, calibrate, alert; learns only from sessions it did not flag."""

    def __init__(self, spec: SessionSpec, alert_percentile: float, min_samples: int = 100) -> None:
        self.aggregator = SessionAggregator(spec)
        self.scorer = SessionScorer()
        self.calibrator = QuantileCalibrator(size=20_000, seed=0)
        self.alert_percentile = alert_percentile
        self.min_samples = min_samples
        self._last_origin: dict[str, tuple[str, int, int, int | None]] = {}

    def process(self, events: list[DecodedEvent], model: ModelRef) -> list[dict[str, Any]]:
        """Feed a batch of events; returns alert dicts for the sessions that closed unusual."""
        closed: list[SessionRecord] = []
        for ev in events:
            rec = ev.record
            for key in self.aggregator.keys_for(ev.event):
                self._last_origin[key] = (rec.topic, rec.partition, rec.offset, rec.timestamp)
            closed.extend(self.aggregator.add(ev.event))
        if not closed:
            return []
        scores = self.scorer.score_many(closed)
        if self.calibrator.seen >= self.min_samples:
            pct = self.calibrator.percentile(scores)
        else:
            pct = np.full(len(closed), np.nan)
        self.calibrator.update(scores)
        flagged = np.nan_to_num(pct, nan=-1.0) >= self.alert_percentile
        self.scorer.learn_many([s for s, f in zip(closed, flagged, strict=True) if not f])
        alerts = []
        for i in np.flatnonzero(flagged):
            alerts.append(self._alert(closed[i], float(scores[i]), float(pct[i]), model))
        for s in closed:
            self._last_origin.pop(s.key, None)
        return alerts

    def _confidence(self) -> dict[str, Any]:
        conf, _ = confidence(
            self.scorer.sessions_seen_ * 100.0, self.calibrator.seen, self.min_samples, []
        )  # a session is ~100 events' evidence
        return {"confidence_score": conf, "low_confidence": conf < LOW_CONFIDENCE}

    def _alert(self, s: SessionRecord, score: float, pct: float, model: ModelRef) -> dict:
        topic, partition, offset, ts = self._last_origin.get(s.key, ("", -1, -1, None))
        ident = f"{topic}\x1f{partition}\x1f{offset}\x1f{s.key}\x1f{model.version}"
        top = self.scorer.explain(s, top_k=3)
        return {
            "schema_version": SCHEMA_VERSION,
            "alert_id": hashlib.sha256(ident.encode()).hexdigest()[:32],
            "group_id": hashlib.sha256(f"{SESSION_KIND}\x1e{top[0][0] if top else ''}".encode())
            .hexdigest()[:24],
            "group_rank": 0,  # set by the group book
            "group_count": 1,
            "kind": SESSION_KIND,
            "event_time": s.end,
            "detected_at": time.time(),
            "score": score,
            "percentile": pct,
            "severity": QuantileCalibrator.severity(np.array([pct]))[0],
            **self._confidence(),
            "model": {"name": model.name, "version": model.version},
            "entities": {"session_key": s.key, "rarest_template": top[0][0] if top else ""},
            "explanation": [],
            "rarity": [  # the session's rarest templates: count in the session, share of it
                {"type": "template", "value": t, "count": float(s.template_counts.get(t, 0)),
                 "frequency": s.template_counts.get(t, 0) / max(s.count, 1)}
                for t, _surprisal in top
            ],
            "origin": {"topic": topic, "partition": partition, "offset": offset,
                       "timestamp_ms": ts},
            "attributes": {
                "template_surprisal": dict(top),
                "session": {**s.to_dict(),
                            "template_counts": dict(s.template_counts.most_common(20))},
            },
        }  # fmt: skip
