"""Scored outputs: an alert for each flagged event, and optionally a score for every event."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from schemas.base import SCHEMA_VERSION, OutputModel


class Severity(StrEnum):
    """Calibrated severity: the same percentile means the same severity for every kind."""

    low = "low"  #: above the alert threshold, below the 'medium' percentile
    medium = "medium"  #: unusual for this kind; worth a look in a quiet shift
    high = "high"  #: rare for this kind; triage today
    critical = "critical"  #: among the rarest events this model has scored; triage now


class ModelRef(OutputModel):
    """Which model scored an event: replaying with the same version reproduces the score."""

    name: str
    version: str


class Origin(OutputModel):
    """Where the scored event came from; with the model version it determines the alert id."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


class PairExplanation(OutputModel):
    """Two entities of the event that the model finds unusual together."""

    type_a: str
    value_a: str
    type_b: str
    value_b: str
    contribution: float = Field(description="share of the anomaly score, higher = more to blame")
    seen_together: float | None = Field(
        default=None,
        description="(decayed) times the model has seen these two values in one event; "
        "null when the model does not count pairs (embeddings)",
    )


class EntityInfo(OutputModel):
    """How often the model has seen one entity value of this kind of event."""

    type: str
    value: str
    count: float
    frequency: float


class Alert(OutputModel):
    """One flagged event, explained. `alert_id` is a function of origin and model version."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    alert_id: str
    group_id: str = Field(description="same anomalous entity pattern -> same group")
    group_rank: int = Field(default=0, ge=0, description="the group's rank now; 0 = unranked")
    group_count: int = Field(default=1, ge=1, description="alerts the group has folded")
    kind: str
    event_time: float
    detected_at: float
    score: float
    percentile: float = Field(ge=0, le=100)
    severity: Severity
    confidence_score: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="how much the model knows about what it judged (service/confidence.py)",
    )
    low_confidence: bool = Field(
        default=False, description="confidence below 50: rare maybe only because new"
    )
    model: ModelRef
    entities: dict[str, str]
    explanation: list[PairExplanation]
    rarity: list[EntityInfo]
    origin: Origin
    attributes: dict[str, Any] = Field(default_factory=dict)


class ScoreRecord(OutputModel):
    """The score of every event (optional scores topic), for dashboards and offline study."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    kind: str
    event_time: float
    score: float
    percentile: float
    alerted: bool
    model: ModelRef
    origin: Origin
