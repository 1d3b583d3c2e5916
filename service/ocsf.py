"""Outrider alerts as OCSF Detection Findings (OCSF 1.7.0, class_uid 2004, category_uid 2).

An alert group is one finding: the group's first alert creates it (activity_id 1), each later
batch with alerts of the group updates it (activity_id 2: same `finding_info.uid`, `count` and
time range covering every alert folded in), and an analyst's verdict closes it (activity_id 3).
A SIEM that upserts by `finding_info.uid` (the Kafka key) therefore shows one row per threat
pattern, not one per event.

Input is the alert as it is on the wire (`schemas.Alert.model_dump(mode="json")`), so this
module can run in the scorer or in a separate sink process without the detector loaded.
Everything Outrider knows that OCSF has no field for stays under `unmapped.outrider`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from importlib import metadata
from typing import Any

from schemas.feedback import Feedback, Verdict
from service.triage import blamed_pairs, describe_pair, rarest_value

#: The OCSF schema version the records follow (validated against pydantic-ocsf's copy).
OCSF_VERSION = "1.7.0"
CLASS_UID = 2004
CATEGORY_UID = 2
PRODUCT = "Outrider"
MAX_EVIDENCES = 16  #: alerts a finding record reports as evidence (the batch's newest)


class Activity(IntEnum):
    """Detection Finding activity_id values."""

    create = 1
    update = 2
    close = 3


#: Outrider severity -> OCSF severity_id (2 Low .. 5 Critical; 1 Informational is unused:
#: an alert is never merely informational) and risk_level_id (1 Low .. 4 Critical).
SEVERITY_ID = {"low": 2, "medium": 3, "high": 4, "critical": 5}
RISK_LEVEL_ID = {"low": 1, "medium": 2, "high": 3, "critical": 4}

#: Analyst verdict -> OCSF evidences.verdict_id, so the close record carries it in an OCSF field.
VERDICT_ID = {
    Verdict.false_positive: 1,
    Verdict.true_positive: 2,
    Verdict.benign_positive: 5,  # Benign
    Verdict.undetermined: 7,  # Insufficient Data
    Verdict.duplicate: 10,
    Verdict.other: 99,
}

#: Entity type -> OCSF observable type_id. Types not listed become 99 (Other) with `type` set.
OBSERVABLE_TYPE_ID: dict[str, int] = {
    **dict.fromkeys(
        ("ip", "src_ip", "dst_ip", "orig_h", "resp_h", "source_ip", "destination_ip"), 2
    ),
    **dict.fromkeys(("host", "src_host", "dst_host", "agent", "query", "sni"), 1),
    **dict.fromkeys(("user", "src_user", "dst_user"), 4),
    **dict.fromkeys(("dst_port", "resp_p", "src_port", "port"), 11),
    **dict.fromkeys(
        ("process", "parent_process", "program", "source_process", "target_process"), 9
    ),
    **dict.fromkeys(("target_file", "image_loaded"), 45),
    "user_agent": 16,
    "ja3": 8,
}

#: Entity type -> where it goes in an OCSF evidence object (section, field). Unlisted types are
#: in `evidences[].data` only.
EVIDENCE_FIELD: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("src_ip", "orig_h", "ip", "source_ip"), ("src_endpoint", "ip")),
    **dict.fromkeys(("dst_ip", "resp_h", "destination_ip"), ("dst_endpoint", "ip")),
    **dict.fromkeys(("dst_port", "resp_p"), ("dst_endpoint", "port")),
    **dict.fromkeys(("user", "src_user"), ("user", "name")),
    **dict.fromkeys(("process", "source_process"), ("process", "name")),
    **dict.fromkeys(("host", "dst_host"), ("device", "hostname")),
}


@functools.cache
def product_version() -> str:
    """The installed package's version (read once: package metadata parsing is slow)."""
    try:
        return metadata.version("outrider")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


@dataclass(slots=True)
class GroupState:
    """What a finding remembers between its records: enough to update and to close it."""

    uid: str
    count: int
    first_time: float  #: earliest event time in the group, epoch seconds
    last_time: float  #: latest event time in the group, epoch seconds
    created_at: float  #: when the finding was created (first alert's detected_at)
    last_alert: dict[str, Any] = field(repr=False)

    @classmethod
    def start(cls, alert: Mapping[str, Any]) -> GroupState:
        t = float(alert["event_time"])
        return cls(
            uid=str(alert["group_id"]),
            count=1,
            first_time=t,
            last_time=t,
            created_at=float(alert["detected_at"]),
            last_alert=dict(alert),
        )

    def fold(self, alert: Mapping[str, Any]) -> None:
        """Count one more alert of this group; the time range only grows."""
        self.fold_many([alert])

    def fold_many(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Count these alerts of this group (a storm is thousands of one group's alerts);
        the time range only grows, the newest alert is the last."""
        if not alerts:
            return
        for alert in alerts:
            if alert["group_id"] != self.uid:
                raise ValueError(f"alert of group {alert['group_id']!r} folded into {self.uid!r}")
        times = [float(a["event_time"]) for a in alerts]
        self.count += len(alerts)
        self.first_time = min(self.first_time, *times)
        self.last_time = max(self.last_time, *times)
        self.last_alert = dict(alerts[-1])


def create_finding(alert: Mapping[str, Any]) -> tuple[dict[str, Any], GroupState]:
    """The create record (activity 1) for a group's first alert, and the group's state."""
    state = GroupState.start(alert)
    return _finding(alert, state, Activity.create, float(alert["detected_at"])), state


def update_finding(state: GroupState, alert: Mapping[str, Any]) -> dict[str, Any]:
    """Fold `alert` into `state` and return the update record (activity 2)."""
    state.fold(alert)
    return _finding(alert, state, Activity.update, float(alert["detected_at"]))


def close_finding(state: GroupState, feedback: Feedback) -> dict[str, Any]:
    """The close record (activity 3): the analyst's verdict ends the finding."""
    rec = _finding(state.last_alert, state, Activity.close, feedback.time)
    rec["status_id"], rec["status"] = 4, "Resolved"
    reason = f" ({feedback.reason.value})" if feedback.reason else ""
    rec["status_detail"] = f"{feedback.verdict.value}{reason}"
    if feedback.comment:
        rec["comment"] = feedback.comment
    for ev in rec["evidences"]:
        ev["verdict_id"] = VERDICT_ID[feedback.verdict]
    rec["unmapped"]["outrider"]["verdict"] = feedback.model_dump(mode="json")
    rec["metadata"]["uid"] = _uid(state.uid, "close", str(feedback.time))
    return rec


class FindingBook:
    """Open findings by group id, bounded (oldest evicted): alert -> create or update record,
    verdict -> close record. Verdicts may name an alert id or a group id."""

    def __init__(self, max_open: int = 100_000) -> None:
        self.max_open = max_open
        self._open: OrderedDict[str, GroupState] = OrderedDict()
        self._group_of_alert: OrderedDict[str, str] = OrderedDict()

    def on_alert(self, alert: Mapping[str, Any]) -> dict[str, Any]:
        return self.on_alerts([alert])[0]

    def on_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One record per group among `alerts` (a batch's, in order): create when the group's
        finding opens here, else update. A finding is state a sink upserts by uid, so the
        batch's intermediate states would be overwritten before anyone read them; its count
        and time range cover every alert and its evidences are the newest `MAX_EVIDENCES`.
        (One record per alert made OCSF the costliest part of an alert storm.)"""
        by_group: dict[str, list[Mapping[str, Any]]] = {}
        for alert in alerts:
            by_group.setdefault(str(alert["group_id"]), []).append(alert)
        records = []
        for gid, group in by_group.items():
            state = self._open.get(gid)
            activity = Activity.update
            if state is None:
                state, activity = GroupState.start(group[0]), Activity.create
                self._open[gid] = state
                folded = group[1:]
            else:
                self._open.move_to_end(gid)
                folded = group
            state.fold_many(folded)
            for alert in group:
                self._group_of_alert[str(alert["alert_id"])] = gid
            last = group[-1]
            evidence = group[-MAX_EVIDENCES:]
            records.append(_finding(last, state, activity, float(last["detected_at"]), evidence))
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
        while len(self._group_of_alert) > 4 * self.max_open:
            self._group_of_alert.popitem(last=False)
        return records

    def state(self, max_open: int = 10_000) -> dict[str, Any]:
        """The most recent open findings as JSON, saved with the model: a verdict after a
        restart must still close the finding it names."""
        states = list(self._open.values())[-max_open:]
        uids = {st.uid for st in states}
        return {
            "format": "outrider.findings/1",
            "open": [dataclasses.asdict(st) for st in states],
            "alerts": [(a, g) for a, g in self._group_of_alert.items() if g in uids],
        }

    @classmethod
    def from_state(cls, d: dict[str, Any], max_open: int = 100_000) -> FindingBook:
        if d.get("format") != "outrider.findings/1":
            raise ValueError(f"not a finding book state: {d.get('format')!r}")
        book = cls(max_open)
        for st in d["open"]:
            book._open[st["uid"]] = GroupState(**st)
        book._group_of_alert.update((a, g) for a, g in d["alerts"])
        return book

    def on_verdict(self, feedback: Feedback) -> dict[str, Any] | None:
        """The close record, or None when the finding is unknown here (evicted, another
        scorer's partition): the verdict still trains the model, it just closes nothing."""
        gid = self._group_of_alert.get(feedback.target_id, feedback.target_id)
        state = self._open.pop(gid, None)
        return None if state is None else close_finding(state, feedback)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _uid(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def title(alert: Mapping[str, Any]) -> str:
    """One line an analyst can triage from: a stream finding (service/stream_stage.py), else
    the kind and its most unusual pair, else its rarest value."""
    stream = _stream_note(alert)
    if stream:
        return f"Unusual {alert['kind']}: {stream}"[:256]
    pairs = blamed_pairs(alert)
    if pairs:
        p = pairs[0]
        return (
            f"Unusual {alert['kind']}: {p['type_a']}={p['value_a']} "
            f"with {p['type_b']}={p['value_b']}"
        )[:256]
    r = rarest_value(alert)
    if r is not None:
        seen = "new" if float(r["count"]) == 0 else f"rare ({float(r['count']):g}x)"
        return f"Unusual {alert['kind']}: {seen} {r['type']}={r['value']}"[:256]
    return f"Unusual {alert['kind']} event"


def _stream_note(alert: Mapping[str, Any]) -> str:
    return str(((alert.get("attributes") or {}).get("stream_context") or {}).get("note", ""))


def describe(alert: Mapping[str, Any]) -> str:
    """The explanation as text: a stream finding, percentile, blamed pairs, and how rare each
    entity is."""
    parts = [
        f"{alert['kind']} event at percentile {float(alert['percentile']):.2f} "
        f"({alert['severity']}) for model {alert['model']['name']} {alert['model']['version']}."
    ]
    stream = _stream_note(alert)
    if stream:
        parts.insert(0, f"Stream finding: {stream}.")
    pairs = blamed_pairs(alert)
    if pairs:
        parts.append(
            "Most unusual together: " + "; ".join(describe_pair(p) for p in pairs[:5]) + "."
        )
    rarity = alert.get("rarity") or []
    if rarity:
        parts.append(
            "Rarity: "
            + "; ".join(
                f"{r['type']}={r['value']} seen {float(r['count']):g} times "
                f"({100 * float(r['frequency']):.3g}%)"
                for r in rarity[:8]
            )
            + "."
        )
    return " ".join(parts)


def _risk_score(percentile: float) -> int:
    return max(0, min(100, round(float(percentile))))


def _confidence(alert: Mapping[str, Any]) -> int | None:
    """A 0-100 confidence if the alert carries one (`confidence_score`, or `confidence` as a
    number or as an object with `score`)."""
    raw: Any = alert.get("confidence_score", alert.get("confidence"))
    if isinstance(raw, Mapping):
        raw = raw.get("score")
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw == raw:
        return max(0, min(100, round(float(raw))))
    return None


def _observables(entities: Mapping[str, str]) -> list[dict[str, Any]]:
    out = []
    for etype, value in entities.items():
        if value == "":
            continue
        type_id = OBSERVABLE_TYPE_ID.get(etype, 99)
        if type_id == 2 and not is_ip(value):
            type_id = 1  # a name where an address was expected: still a host
        obs: dict[str, Any] = {
            "name": f"unmapped.outrider.entities.{etype}",
            "type_id": type_id,
            "value": str(value),
        }
        if type_id == 99:
            obs["type"] = etype
        out.append(obs)
    return out


def is_ip(value: str) -> bool:
    """True for an IPv4 or IPv6 address (what makes an entity an IP observable / ECS ip).
    Memoised for text (bounded): the same few addresses recur on every alert of a group."""
    if isinstance(value, str):
        return _is_ip_text(value)
    return _parse_ip(value)


@functools.lru_cache(maxsize=16_384)
def _is_ip_text(value: str) -> bool:
    return _parse_ip(value)


def _parse_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _evidence(alert: Mapping[str, Any]) -> dict[str, Any]:
    entities: Mapping[str, str] = alert["entities"]
    ev: dict[str, Any] = {"uid": str(alert["alert_id"]), "name": str(alert["kind"])}
    for etype, value in entities.items():
        place = EVIDENCE_FIELD.get(etype)
        if place is None or value == "":
            continue
        section, key = place
        if key == "ip" and not is_ip(value):
            key = "hostname"
        if key == "port":
            if not str(value).isdigit():
                continue
            ev.setdefault(section, {})[key] = int(value)
            continue
        ev.setdefault(section, {})[key] = str(value)
    if "device" in ev:
        ev["device"]["type_id"] = 0  # Unknown: Outrider knows the name, not the device kind
    ev["data"] = {"entities": dict(entities)}
    return ev


def _anomaly_analyses(alert: Mapping[str, Any]) -> list[dict[str, Any]]:
    anomalies = [
        {
            "observation_parameter": f"{p['type_a']}+{p['type_b']}",
            "observation_type": "Co-occurrence Analysis",
            "observed_pattern": "UNUSUAL_PAIR",
            "observations": [{"value": f"{p['value_a']} | {p['value_b']}"}],
        }
        for p in blamed_pairs(alert)
    ]
    anomalies += [
        {
            "observation_parameter": str(r["type"]),
            "observation_type": "Frequency Analysis",
            "observed_pattern": "UNSEEN" if float(r["count"]) == 0 else "RARE",
            "observations": [{"value": str(r["value"]), "count": int(float(r["count"]))}],
        }
        for r in alert.get("rarity") or []
    ]
    if not anomalies:
        return []
    return [
        {
            "analysis_targets": [{"name": str(alert["kind"]), "type": "Event Kind"}],
            "anomalies": anomalies,
        }
    ]


def _finding(
    alert: Mapping[str, Any],
    state: GroupState,
    activity: Activity,
    at: float,
    evidence: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The record for `alert`, the newest of its group; `evidence`: the alerts it reports
    (default: `alert` alone)."""
    severity = str(alert["severity"])
    model = alert["model"]
    kind = str(alert["kind"])
    origin = alert.get("origin") or {}
    headline = title(alert)
    rec: dict[str, Any] = {
        "activity_id": int(activity),
        "activity_name": activity.name.capitalize(),
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + int(activity),
        "type_name": f"Detection Finding: {activity.name.capitalize()}",
        "time": _ms(at),
        "severity_id": SEVERITY_ID[severity],
        "severity": severity.capitalize(),
        "status_id": 1,
        "status": "New",
        "is_alert": True,
        "message": headline,
        "count": state.count,
        "start_time": _ms(state.first_time),
        "end_time": _ms(state.last_time),
        "risk_score": _risk_score(alert["percentile"]),
        "risk_level_id": RISK_LEVEL_ID[severity],
        "risk_level": severity.capitalize(),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": PRODUCT, "vendor_name": PRODUCT, "version": product_version()},
            "uid": _uid(str(alert["alert_id"]), activity.name),
            "correlation_uid": state.uid,
            "log_name": str(origin.get("topic", "")) or None,
        },
        "finding_info": {
            "uid": state.uid,
            "title": headline,
            "desc": describe(alert),
            "types": [kind],
            "analytic": {
                "type_id": 4,
                "type": "Learning (ML/DL)",
                "name": str(model["name"]),
                "uid": str(model["name"]),
                "version": str(model["version"]),
            },
            "created_time": _ms(state.created_at),
            "modified_time": _ms(at),
            "first_seen_time": _ms(state.first_time),
            "last_seen_time": _ms(state.last_time),
        },
        "observables": _observables(alert["entities"]),
        "evidences": [_evidence(a) for a in evidence or (alert,)],
        "unmapped": {
            "outrider": {
                "alert_id": alert["alert_id"],
                "group_id": alert["group_id"],
                "kind": kind,
                "score": alert["score"],
                "percentile": alert["percentile"],
                "severity": severity,
                "model": dict(model),
                "entities": dict(alert["entities"]),
                "explanation": list(alert.get("explanation") or []),
                "rarity": list(alert.get("rarity") or []),
                "origin": dict(origin),
                "group": {
                    "count": state.count,
                    "first_time": state.first_time,
                    "last_time": state.last_time,
                },
            }
        },
    }
    if rec["metadata"]["log_name"] is None:
        del rec["metadata"]["log_name"]
    analyses = _anomaly_analyses(alert)
    if analyses:
        rec["anomaly_analyses"] = analyses
    conf = _confidence(alert)
    if conf is not None:
        rec["confidence_score"] = conf
        rec["confidence_id"] = 1 if conf < 34 else 2 if conf < 67 else 3
        rec["confidence"] = ("Low", "Medium", "High")[rec["confidence_id"] - 1]
        rec["unmapped"]["outrider"]["confidence"] = alert.get("confidence", conf)
    return rec
