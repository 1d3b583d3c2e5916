"""Verdicts in Elastic, Sentinel, Splunk ES and OCSF vocabularies -> Feedback + training signal."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.feedback import Feedback, Verdict, VerdictReason
from service.verdicts import (
    ELASTIC,
    OCSF,
    SPLUNK,
    TrainingSignal,
    feedback_from_any,
    training_signal,
    vocabulary_of,
)

GROUP = "0f3a9c1e5b7d2a4c6e8f0a1b"

ELASTIC_DOC = {
    "kibana.alert.uuid": "e1b2c3",
    "kibana.alert.workflow_status": "closed",
    "kibana.alert.workflow_reason": "false_positive",
    "kibana.alert.workflow_user": "u_alice",
    "kibana.alert.workflow_status_updated_at": "2024-05-01T10:00:00Z",
    "labels": {"outrider_group_id": GROUP},
}
SENTINEL_INCIDENT = {
    "name": "7d4e-incident",
    "properties": {
        "classification": "BenignPositive",
        "classificationReason": "SuspiciousButExpected",
        "classificationComment": "backup job",
        "status": "Closed",
        "owner": {"userPrincipalName": "bob@contoso.com"},
        "lastModifiedTimeUtc": "2024-05-01T11:00:00Z",
        "finding_uid": GROUP,
    },
}
SPLUNK_NOTABLE = {
    "event_id": "ABC@@notable@@123",
    "disposition": "disposition:1",
    "owner": "carol",
    "comment": "confirmed C2",
    "time": 1714561200,
    "finding_uid": GROUP,
}
OCSF_FINDING = {
    "class_uid": 2005,
    "verdict_id": 10,
    "finding_info": {"uid": GROUP},
    "assignee": {"name": "dave"},
    "time": 1714564800000,
    "metadata": {"uid": "m-1"},
}


@pytest.mark.parametrize(
    ("doc", "vocab", "verdict", "reason", "analyst", "ref", "signal"),
    [
        (
            ELASTIC_DOC,
            "elastic",
            Verdict.false_positive,
            VerdictReason.incorrect_alert_logic,
            "u_alice",
            "e1b2c3",
            TrainingSignal(0, detector_mistake=True),
        ),
        (
            SENTINEL_INCIDENT,
            "sentinel",
            Verdict.benign_positive,
            VerdictReason.suspicious_but_expected,
            "bob@contoso.com",
            "7d4e-incident",
            TrainingSignal(0, suppress_lookalikes=True),
        ),
        (
            SPLUNK_NOTABLE,
            "splunk",
            Verdict.true_positive,
            VerdictReason.suspicious_activity,
            "carol",
            "ABC@@notable@@123",
            TrainingSignal(1),
        ),
        (OCSF_FINDING, "ocsf", Verdict.duplicate, None, "dave", "m-1", TrainingSignal(None)),
    ],
)
def test_each_vocabulary_maps_to_feedback_and_a_training_signal(
    doc: dict[str, Any],
    vocab: str,
    verdict: Verdict,
    reason: VerdictReason | None,
    analyst: str,
    ref: str,
    signal: TrainingSignal,
) -> None:
    assert vocabulary_of(doc) == vocab
    fb = feedback_from_any(doc)
    assert isinstance(fb, Feedback)
    assert (fb.target_id, fb.verdict, fb.reason) == (GROUP, verdict, reason)
    assert (fb.analyst, fb.source_ref) == (analyst, ref)
    assert 1.7e9 < fb.time < 1.8e9
    assert training_signal(fb.verdict) == signal


def test_comments_and_times_come_across() -> None:
    assert feedback_from_any(SENTINEL_INCIDENT).comment == "backup job"
    assert feedback_from_any(SPLUNK_NOTABLE).time == 1714561200.0
    assert feedback_from_any(OCSF_FINDING).time == 1714564800.0
    assert feedback_from_any(ELASTIC_DOC).time == 1714557600.0


def test_nested_elastic_and_every_table_entry() -> None:
    nested = {
        "kibana": {"alert": {"workflow_status": "closed", "workflow_reason": "true_positive"}},
        "event": {"id": "a" * 32},
    }
    fb = feedback_from_any(nested)
    assert (fb.verdict, fb.target_id) == (Verdict.true_positive, "a" * 32)
    for reason in ELASTIC:
        doc = {**ELASTIC_DOC, "kibana.alert.workflow_reason": reason}
        assert feedback_from_any(doc).verdict == ELASTIC[reason][0]
    for number, (verdict, _) in SPLUNK.items():
        for form in (number, str(number), f"disposition:{number}"):
            assert feedback_from_any({**SPLUNK_NOTABLE, "disposition": form}).verdict == verdict
    for number, (verdict, _) in OCSF.items():
        assert feedback_from_any({**OCSF_FINDING, "verdict_id": number}).verdict == verdict
    closed_no_reason = {k: v for k, v in ELASTIC_DOC.items() if "reason" not in k}
    assert feedback_from_any(closed_no_reason).verdict == Verdict.undetermined
    label = {**SPLUNK_NOTABLE, "disposition": "False Positive - Inaccurate Data"}
    assert feedback_from_any(label).reason == VerdictReason.inaccurate_data


def test_outrider_own_feedback_passes_through() -> None:
    fb = feedback_from_any(
        {"target_id": GROUP, "verdict": "true_positive", "analyst": "eve", "time": 1.0}
    )
    assert fb.verdict == Verdict.true_positive


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("closed", "JSON object"),
        ({}, "unrecognised verdict"),
        ({"hello": "world"}, "unrecognised verdict"),
        ({**ELASTIC_DOC, "kibana.alert.workflow_status": "acknowledged"}, "not a verdict"),
        ({**ELASTIC_DOC, "kibana.alert.workflow_reason": "meh"}, "workflow_reason"),
        ({"classification": "Maybe", "finding_uid": GROUP}, "classification"),
        ({**SPLUNK_NOTABLE, "disposition": 0}, "not a verdict"),
        ({**SPLUNK_NOTABLE, "disposition": "disposition:9"}, "not a verdict"),
        ({**OCSF_FINDING, "verdict_id": 42}, "verdict_id"),
        ({"verdict_id": 2}, "names no finding"),
    ],
)
def test_garbage_is_rejected_with_a_clear_error(doc: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        feedback_from_any(doc)
