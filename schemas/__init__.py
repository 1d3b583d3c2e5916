"""Everything Outrider puts on or takes off the wire, as pydantic v2 models.

Inputs are lenient where it is safe (unknown fields kept, numbers accepted as entity values);
outputs are strict and carry `schema_version`. `python -m schemas.export` writes the JSON Schema
of each model to `schemas/json/` for producers and consumers in other languages.
"""

from schemas.alerts import (
    Alert,
    EntityInfo,
    ModelRef,
    Origin,
    PairExplanation,
    ScoreRecord,
    Severity,
)
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import Event
from schemas.feedback import Feedback, Verdict, VerdictReason
from schemas.models import ModelAnnouncement

__all__ = [
    "Alert",
    "DeadLetter",
    "DeadLetterReason",
    "EntityInfo",
    "Event",
    "Feedback",
    "ModelAnnouncement",
    "ModelRef",
    "Origin",
    "PairExplanation",
    "ScoreRecord",
    "Severity",
    "Verdict",
    "VerdictReason",
]
