"""Rank and shape outputs: alerts (explained, with deterministic ids), scores, dead letters.

Alert ids are a hash of (topic, partition, offset, model version): replaying the same input
with the same model after a crash yields the same id, so duplicates are recognisable
downstream. Group ids hash the kind and entity pattern, so one pattern is one group.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import orjson

from detectors.calibration import QuantileCalibrator
from schemas import DeadLetter, ModelRef, ScoreRecord
from schemas.base import SCHEMA_VERSION
from service.confidence import LOW_CONFIDENCE, confidence
from service.scoring import ScoredKind

#: Raw attributes copied onto an alert are bounded: the alert must stay small and safe.
MAX_ALERT_ATTRIBUTES = 32
MAX_ATTRIBUTE_CHARS = 1024


def alert_id(topic: str, partition: int, offset: int, model_version: str) -> str:
    return hashlib.sha256(
        f"{topic}\x1f{partition}\x1f{offset}\x1f{model_version}".encode()
    ).hexdigest()[:32]


def group_id(kind: str, entities: dict[str, str]) -> str:
    pattern = "\x1f".join(f"{k}={entities[k]}" for k in sorted(entities))
    return hashlib.sha256(f"{kind}\x1e{pattern}".encode()).hexdigest()[:24]


def _bounded(attributes: dict[str, Any]) -> dict[str, Any]:
    """A copy of raw attributes, size- and type-bounded for an alert."""
    out: dict[str, Any] = {}
    if not attributes:
        return out
    for k, v in list(attributes.items())[:MAX_ALERT_ATTRIBUTES]:
        if isinstance(v, str) and len(v) > MAX_ATTRIBUTE_CHARS:
            v = v[:MAX_ATTRIBUTE_CHARS] + "..."
        elif not isinstance(v, str | int | float | bool | type(None)):
            text = orjson.dumps(v, default=str).decode()
            v = text if len(text) <= MAX_ATTRIBUTE_CHARS else text[:MAX_ATTRIBUTE_CHARS] + "..."
        out[str(k)[:128]] = v
    return out


def build_alerts(scored: ScoredKind, model: ModelRef) -> Iterator[dict[str, Any]]:
    """One alert per flagged event of a scored kind, most anomalous first, as the wire dict of
    `schemas.Alert` (built directly: constructing nested pydantic models per alert cost more
    than scoring the batch; tests validate every field against the schema)."""
    now = time.time()
    model_d = {"name": model.name, "version": model.version}
    order = sorted(scored.explanations, key=lambda i: -float(scored.scores[i]))
    severities = QuantileCalibrator.severity(scored.percentiles[order]) if order else []
    # what the alerts of one pattern share (its explanation is explained once per batch):
    # entities, group id, confidence, explanation; read-only once built
    shared: dict[int, tuple[dict[str, str], str, float, dict[str, float], list, list]] = {}
    scores = scored.scores[order].tolist() if order else []  # floats at once, not per alert
    percentiles = scored.percentiles[order].tolist() if order else []
    version = model.version
    for i, severity, score, percentile in zip(order, severities, scores, percentiles, strict=True):
        ev = scored.events[i]
        rec = ev.record
        expl = scored.explanations[i]
        pattern = shared.get(id(expl))
        if pattern is None:
            entities = dict(ev.event.entities)
            conf, parts = confidence(
                scored.events_seen, scored.calibration_seen, scored.calibration_min_samples,
                [r.count for r in expl.rarity],
            )  # fmt: skip
            pairs = [
                {"type_a": p.type_a, "value_a": p.value_a, "type_b": p.type_b,
                 "value_b": p.value_b, "contribution": float(p.contribution),
                 "seen_together": None if p.together is None else float(p.together)}
                for p in expl.pairs
            ]  # fmt: skip
            rarity = [
                {"type": r.entity_type, "value": r.value, "count": float(r.count),
                 "frequency": float(r.frequency)}
                for r in expl.rarity
            ]  # fmt: skip
            pattern = shared[id(expl)] = (
                entities,
                group_id(scored.kind, entities),
                conf,
                parts,
                pairs,
                rarity,
            )
        entities, gid, conf, parts, pairs, rarity = pattern
        yield {
            "schema_version": SCHEMA_VERSION,
            "alert_id": alert_id(rec.topic, rec.partition, rec.offset, version),
            "group_id": gid,
            "group_rank": 0,  # set by the group book
            "group_count": 1,
            "kind": scored.kind,
            "event_time": ev.event.time,
            "detected_at": now,
            "score": score,
            "percentile": percentile,
            "severity": severity,
            "confidence_score": conf,
            "low_confidence": conf < LOW_CONFIDENCE,
            "model": model_d,
            "entities": entities,
            "explanation": pairs,
            "rarity": rarity,
            "origin": {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset,
                       "timestamp_ms": rec.timestamp},
            "attributes": {**_bounded(ev.event.attributes), "confidence": parts},
        }  # fmt: skip


def score_records(scored: ScoredKind, model: ModelRef) -> Iterator[bytes]:
    """Every event's score as JSON bytes (built without pydantic: this is the hot path)."""
    model_d = {"name": model.name, "version": model.version}
    for i, ev in enumerate(scored.events):
        rec = ev.record
        pct = float(scored.percentiles[i])
        yield orjson.dumps(
            {
                "schema_version": ScoreRecord.model_fields["schema_version"].default,
                "kind": scored.kind,
                "event_time": ev.event.time,
                "score": float(scored.scores[i]),
                "percentile": pct if pct == pct else 0.0,
                "alerted": bool(scored.alerted[i]),
                "model": model_d,
                "origin": {
                    "topic": rec.topic,
                    "partition": rec.partition,
                    "offset": rec.offset,
                    "timestamp_ms": rec.timestamp,
                },
            }
        )


def dead_letter_headers(dl: DeadLetter) -> list[tuple[str, bytes]]:
    """Kafka Connect's DLQ header names, so existing dead-letter tooling reads ours."""
    return [
        ("__connect.errors.topic", dl.topic.encode()),
        ("__connect.errors.partition", str(dl.partition).encode()),
        ("__connect.errors.offset", str(dl.offset).encode()),
        ("__connect.errors.exception.class.name", f"outrider.{dl.reason.value}".encode()),
        ("__connect.errors.exception.message", dl.detail.encode()),
        ("__connect.errors.stage", b"VALUE_CONVERTER"),
    ]
