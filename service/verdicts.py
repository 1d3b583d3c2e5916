"""Analyst verdicts in the vocabularies SOC tools already send, mapped to `schemas.Feedback`.

Analysts close alerts in their own tool; whatever it emits (an Elastic alert update, a
Microsoft Sentinel incident, a Splunk ES notable, an OCSF finding) is read as it is, so nobody
writes glue. `feedback_from_any` detects the vocabulary; `training_signal` says what the
verdict teaches the model.

Which finding a verdict is about is read, first present wins, from `target_id`, `finding_uid`,
`finding_info.uid`, `group_id`, `alert_id`, `labels.outrider_group_id` (the ECS view's),
`unmapped.outrider.group_id`, then the vocabulary's own keys (below).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.feedback import Feedback, Verdict, VerdictReason
from service.sources import lookup, parse_time

V, R = Verdict, VerdictReason
TARGET_KEYS = (
    "target_id",
    "finding_uid",
    "finding_info.uid",
    "group_id",
    "alert_id",
    "labels.outrider_group_id",
    "unmapped.outrider.group_id",
)


@dataclass(frozen=True, slots=True)
class TrainingSignal:
    """What a verdict teaches: a label (1 anomaly, 0 benign, None nothing), whether to sink
    look-alikes of the alert, and whether it counts as a detector mistake (a metric)."""

    label: int | None
    suppress_lookalikes: bool = False
    detector_mistake: bool = False


def training_signal(verdict: Verdict) -> TrainingSignal:
    """true_positive -> anomaly (1); benign_positive -> benign (0), suppress look-alikes;
    false_positive -> benign (0), counted against the model; duplicate, undetermined and
    other -> no training signal (an analyst's shrug must not move the model)."""
    if verdict is V.true_positive:
        return TrainingSignal(1)
    if verdict is V.benign_positive:
        return TrainingSignal(0, suppress_lookalikes=True)
    if verdict is V.false_positive:
        return TrainingSignal(0, detector_mistake=True)
    return TrainingSignal(None)


#: Elastic Security (8.x/9.x) `kibana.alert.workflow_reason`, set when an alert is closed.
#:
#: ==================  =================  =======================
#: workflow_reason     verdict            reason
#: ==================  =================  =======================
#: true_positive       true_positive      suspicious_activity
#: benign_positive     benign_positive    suspicious_but_expected
#: false_positive      false_positive     incorrect_alert_logic
#: duplicate           duplicate          -
#: other / (none)      other / undet.     other / -
#: ==================  =================  =======================
#:
#: `workflow_status` "closed" without a reason is `undetermined`; "open" and "acknowledged"
#: are not verdicts and are refused.
ELASTIC = {
    "true_positive": (V.true_positive, R.suspicious_activity),
    "benign_positive": (V.benign_positive, R.suspicious_but_expected),
    "false_positive": (V.false_positive, R.incorrect_alert_logic),
    "duplicate": (V.duplicate, None),
    "other": (V.other, R.other),
}

#: Microsoft Sentinel incident `classification` / `classificationReason`.
#:
#: ================  =====================  =================  =======================
#: classification    classificationReason   verdict            reason
#: ================  =====================  =================  =======================
#: TruePositive      SuspiciousActivity     true_positive      suspicious_activity
#: BenignPositive    SuspiciousButExpected  benign_positive    suspicious_but_expected
#: FalsePositive     IncorrectAlertLogic    false_positive     incorrect_alert_logic
#: FalsePositive     InaccurateData         false_positive     inaccurate_data
#: Undetermined      -                      undetermined       -
#: ================  =====================  =================  =======================
SENTINEL = {
    "truepositive": V.true_positive,
    "benignpositive": V.benign_positive,
    "falsepositive": V.false_positive,
    "undetermined": V.undetermined,
}
SENTINEL_DEFAULT_REASON = {
    V.true_positive: R.suspicious_activity,
    V.benign_positive: R.suspicious_but_expected,
}
SENTINEL_REASON = {
    "suspiciousactivity": R.suspicious_activity,
    "suspiciousbutexpected": R.suspicious_but_expected,
    "incorrectalertlogic": R.incorrect_alert_logic,
    "inaccuratedata": R.inaccurate_data,
}

#: Splunk Enterprise Security notable `disposition` (ES 7.1+ defaults; sent as 1, "1",
#: "disposition:1" or its label). 0 "Unassigned" is not a verdict and is refused.
#:
#: ===  ============================================  ===============  =======================
#: id   label                                         verdict          reason
#: ===  ============================================  ===============  =======================
#: 1    True Positive - Suspicious Activity           true_positive    suspicious_activity
#: 2    Benign Positive - Suspicious But Expected     benign_positive  suspicious_but_expected
#: 3    False Positive - Incorrect Analytic Logic     false_positive   incorrect_alert_logic
#: 4    False Positive - Inaccurate Data              false_positive   inaccurate_data
#: 5    Other                                         other            other
#: 6    Undetermined                                  undetermined     -
#: ===  ============================================  ===============  =======================
SPLUNK = {
    1: (V.true_positive, R.suspicious_activity),
    2: (V.benign_positive, R.suspicious_but_expected),
    3: (V.false_positive, R.incorrect_alert_logic),
    4: (V.false_positive, R.inaccurate_data),
    5: (V.other, R.other),
    6: (V.undetermined, None),
}
SPLUNK_LABELS = {
    "true positive - suspicious activity": 1,
    "benign positive - suspicious but expected": 2,
    "false positive - incorrect analytic logic": 3,
    "false positive - inaccurate data": 4,
    "other": 5,
    "undetermined": 6,
}

#: OCSF `verdict_id` (Incident Finding / evidences; OCSF 1.x enum).
#:
#: ====  ==================  ===============  =======================
#: id    caption             verdict          reason
#: ====  ==================  ===============  =======================
#: 0     Unknown             undetermined     -
#: 1     False Positive      false_positive   incorrect_alert_logic
#: 2     True Positive       true_positive    suspicious_activity
#: 3     Disregard           other            other
#: 4     Suspicious          undetermined     -
#: 5     Benign              benign_positive  suspicious_but_expected
#: 6     Test                other            other   (a drill: never teach "benign")
#: 7     Insufficient Data   undetermined     -
#: 8     Security Risk       true_positive    suspicious_activity
#: 9     Managed Externally  other            other
#: 10    Duplicate           duplicate        -
#: 99    Other               other            other
#: ====  ==================  ===============  =======================
OCSF = {
    0: (V.undetermined, None),
    1: (V.false_positive, R.incorrect_alert_logic),
    2: (V.true_positive, R.suspicious_activity),
    3: (V.other, R.other),
    4: (V.undetermined, None),
    5: (V.benign_positive, R.suspicious_but_expected),
    6: (V.other, R.other),
    7: (V.undetermined, None),
    8: (V.true_positive, R.suspicious_activity),
    9: (V.other, R.other),
    10: (V.duplicate, None),
    99: (V.other, R.other),
}


def _get(obj: Mapping[str, Any], *paths: str) -> Any:
    """The first present, non-empty scalar among `paths` (dotted or nested), else None."""
    for path in paths:
        value = lookup(dict(obj), path)
        if isinstance(value, str | int | float) and not isinstance(value, bool) and value != "":
            return value
    return None


def _target(obj: Mapping[str, Any], *own: str) -> str:
    target = _get(obj, *TARGET_KEYS, *own)
    if target is None:
        raise ValueError(
            f"verdict names no finding: none of {', '.join(TARGET_KEYS + own)} is present"
        )
    return str(target)[:128]


def _time_of(obj: Mapping[str, Any], *paths: str) -> float:
    raw = _get(obj, *paths)
    t = parse_time(raw) if raw is not None else None
    return float(t) if isinstance(t, int | float) and t >= 0 else _time.time()


def _feedback(
    obj: Mapping[str, Any],
    verdict: Verdict,
    reason: VerdictReason | None,
    *,
    target: str,
    analyst: Any,
    comment: Any,
    when: float,
    ref: Any,
) -> Feedback:
    return Feedback(
        target_id=target,
        verdict=verdict,
        reason=reason,
        analyst=str(analyst or "unknown")[:256],
        comment=str(comment or "")[:4096],
        time=when,
        source_ref=None if ref is None else str(ref)[:512],
    )


def from_elastic(obj: Mapping[str, Any]) -> Feedback:
    status = str(_get(obj, "kibana.alert.workflow_status") or "").lower()
    if status != "closed":
        raise ValueError(f"Elastic workflow_status {status!r} is not a verdict (only 'closed')")
    raw = _get(obj, "kibana.alert.workflow_reason")
    if raw is None:
        verdict, reason = V.undetermined, None
    else:
        key = str(raw).strip().lower().replace(" ", "_")
        if key not in ELASTIC:
            raise ValueError(f"unknown Elastic workflow_reason {raw!r}; known: {sorted(ELASTIC)}")
        verdict, reason = ELASTIC[key]
    return _feedback(
        obj,
        verdict,
        reason,
        target=_target(obj, "kibana.alert.original_event.id", "event.id", "kibana.alert.uuid"),
        analyst=_get(obj, "kibana.alert.workflow_user", "user.name"),
        comment=_get(obj, "comment", "kibana.alert.workflow_reason_comment"),
        when=_time_of(obj, "kibana.alert.workflow_status_updated_at", "@timestamp"),
        ref=_get(obj, "kibana.alert.uuid", "_id"),
    )


def from_sentinel(obj: Mapping[str, Any]) -> Feedback:
    props: Mapping[str, Any] = obj.get("properties") or obj
    raw = str(props.get("classification") or "")
    verdict = SENTINEL.get(raw.replace(" ", "").lower())
    if verdict is None:
        raise ValueError(f"unknown Sentinel classification {raw!r}; known: {sorted(SENTINEL)}")
    raw_reason = str(props.get("classificationReason") or "").replace(" ", "").lower()
    reason = SENTINEL_REASON.get(raw_reason) if raw_reason else None
    if raw_reason and reason is None:
        raise ValueError(f"unknown Sentinel classificationReason {raw_reason!r}")
    if reason is None:
        reason = SENTINEL_DEFAULT_REASON.get(verdict)
    return _feedback(
        obj,
        verdict,
        reason,
        target=_target({**obj, **props}, "providerIncidentId"),
        analyst=_get(props, "owner.userPrincipalName", "owner.email", "owner.assignedTo"),
        comment=props.get("classificationComment"),
        when=_time_of(props, "lastModifiedTimeUtc", "closedTimeUtc"),
        ref=_get(obj, "name", "id") or _get(props, "incidentNumber"),
    )


def from_splunk(obj: Mapping[str, Any]) -> Feedback:
    raw = obj.get("disposition")
    text = str(raw).strip().lower()
    if text.startswith("disposition:"):
        text = text.split(":", 1)[1]
    number = int(text) if text.isdigit() else SPLUNK_LABELS.get(text)
    if number not in SPLUNK:
        raise ValueError(f"Splunk disposition {raw!r} is not a verdict (1-6, 0 is unassigned)")
    verdict, reason = SPLUNK[number]
    return _feedback(
        obj,
        verdict,
        reason,
        target=_target(obj, "orig_finding_uid", "orig_group_id"),
        analyst=_get(obj, "owner", "reviewer", "user"),
        comment=obj.get("comment"),
        when=_time_of(obj, "review_time", "time", "_time"),
        ref=_get(obj, "event_id", "rule_id", "notable_id"),
    )


def from_ocsf(obj: Mapping[str, Any]) -> Feedback:
    raw = obj.get("verdict_id")
    try:
        verdict, reason = OCSF[int(raw)]  # type: ignore[arg-type]
    except (TypeError, ValueError, KeyError):
        raise ValueError(f"unknown OCSF verdict_id {raw!r}; known: {sorted(OCSF)}") from None
    return _feedback(
        obj,
        verdict,
        reason,
        target=_target(obj),
        analyst=_get(obj, "assignee.name", "actor.user.name", "assignee.uid"),
        comment=obj.get("comment"),
        when=_time_of(obj, "time"),
        ref=_get(obj, "metadata.uid", "src_url"),
    )


def _is_elastic(obj: Mapping[str, Any]) -> bool:
    return _get(obj, "kibana.alert.workflow_status") is not None


def _is_sentinel(obj: Mapping[str, Any]) -> bool:
    props = obj.get("properties")
    return "classification" in obj or (isinstance(props, Mapping) and "classification" in props)


#: Detection order: the first vocabulary whose marker field is present decides.
Detector = Callable[[Mapping[str, Any]], bool]
VOCABULARIES: tuple[tuple[str, Detector, Callable[..., Feedback]], ...] = (
    ("outrider", lambda o: "verdict" in o and "target_id" in o, Feedback.model_validate),
    ("ocsf", lambda o: "verdict_id" in o, from_ocsf),
    ("elastic", _is_elastic, from_elastic),
    ("sentinel", _is_sentinel, from_sentinel),
    ("splunk", lambda o: "disposition" in o, from_splunk),
)


def vocabulary_of(obj: Mapping[str, Any]) -> str | None:
    """Which vocabulary `obj` speaks, or None."""
    for name, detect, _ in VOCABULARIES:
        if detect(obj):
            return name
    return None


def feedback_from_any(obj: Any) -> Feedback:
    """A `Feedback` from a verdict in Outrider's own shape or any vocabulary above.

    Raises ValueError (pydantic's ValidationError is one) with the cause when the input is not
    a mapping, speaks no known vocabulary, or carries a value the vocabulary does not define.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"a verdict must be a JSON object, not {type(obj).__name__}")
    for _, detect, convert in VOCABULARIES:
        if detect(obj):
            return convert(obj)
    keys = ", ".join(str(k)[:40] for k in list(obj)[:8])
    raise ValueError(
        "unrecognised verdict: expected Outrider feedback (verdict, target_id), OCSF "
        "verdict_id, Elastic kibana.alert.workflow_status, Sentinel classification or Splunk "
        f"ES disposition; got fields: {keys or '(none)'}"
    )
