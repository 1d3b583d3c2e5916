"""Analyst verdicts, in the vocabulary SOC tools already use (OCSF / SIEM dispositions)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.base import SCHEMA_VERSION, InputModel


class Verdict(StrEnum):
    """The analyst's call on an alert or group."""

    true_positive = "true_positive"  #: malicious: train as an anomaly
    benign_positive = "benign_positive"  #: real but expected: sink look-alikes
    false_positive = "false_positive"  #: detector mistake: benign, counted against the model
    duplicate = "duplicate"  #: no training signal
    undetermined = "undetermined"  #: no training signal
    other = "other"  #: no training signal


class VerdictReason(StrEnum):
    """Why the analyst decided so."""

    suspicious_activity = "suspicious_activity"
    suspicious_but_expected = "suspicious_but_expected"
    incorrect_alert_logic = "incorrect_alert_logic"
    inaccurate_data = "inaccurate_data"
    other = "other"


class Feedback(InputModel):
    """A verdict on an alert id or group id, as it arrives on the feedback topic."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    target_id: str = Field(min_length=1, max_length=128, description="alert id or group id")
    verdict: Verdict
    reason: VerdictReason | None = None
    analyst: str = Field(min_length=1, max_length=256)
    comment: str = Field(default="", max_length=4096)
    time: float = Field(ge=0)
    source_ref: str | None = Field(default=None, max_length=512)
