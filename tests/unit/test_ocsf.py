"""OCSF Detection Findings validated against the OCSF 1.7.0 schema that pydantic-ocsf ships.

pydantic-ocsf builds its models from the exported OCSF schema (enums, required attributes,
type_uid = class_uid * 100 + activity_id); its models accept unknown keys, so the test also
walks every emitted key against the schema's attributes: a misspelt field fails here, not in a
customer's SIEM.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel

from schemas import Alert, EntityInfo, ModelRef, Origin, PairExplanation, Severity
from schemas.feedback import Feedback, Verdict, VerdictReason
from service import ocsf

ocsf_models = pytest.importorskip("ocsf.v1_7_0.events", reason="pydantic-ocsf not installed")
DetectionFinding = ocsf_models.DetectionFinding

#: Free-form by design: OCSF `unmapped` and `evidences[].data` are JSON objects.
FREE_FORM = {"unmapped", "data"}


def _alert(offset: int, t: float, severity: Severity = Severity.high, **extra: Any) -> dict:
    return Alert(
        alert_id=f"a{offset:031d}",
        group_id="g" * 24,
        kind="process_access",
        event_time=t,
        detected_at=t + 2.5,
        score=7.25,
        percentile=99.6,
        severity=severity,
        model=ModelRef(name="ape", version="v3"),
        entities={
            "host": "IT001.shire.com",
            "source_process": r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
            "target_process": r"C:\Windows\system32\lsass.exe",
            "granted_access": "0x1010",
            "src_ip": "10.4.17.101",
            "dst_port": "4444",
        },
        explanation=[
            PairExplanation(
                type_a="source_process",
                value_a="powershell.exe",
                type_b="target_process",
                value_b="lsass.exe",
                contribution=0.61,
            )
        ],
        rarity=[
            EntityInfo(type="granted_access", value="0x1010", count=0.0, frequency=0.0),
            EntityInfo(type="target_process", value="lsass.exe", count=12.0, frequency=0.004),
        ],
        origin=Origin(topic="sysmon", partition=0, offset=offset, timestamp_ms=int(t * 1000)),
        **extra,
    ).model_dump(mode="json")


def _inner_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, typing.Annotated):
        return [m for a in args for m in _inner_models(a)]
    return []


def _unknown_keys(model: type[BaseModel], data: Any, path: str = "") -> list[str]:
    """Keys in `data` that the OCSF schema has no attribute for."""
    if isinstance(data, list):
        return [k for i, item in enumerate(data) for k in _unknown_keys(model, item, path)]
    if not isinstance(data, dict):
        return []
    by_name = {(f.alias or n): f for n, f in model.model_fields.items()}
    bad = []
    for key, value in data.items():
        f = by_name.get(key)
        if f is None:
            bad.append(f"{path}{key}")
        elif key not in FREE_FORM:
            for inner in _inner_models(f.annotation):
                bad += _unknown_keys(inner, value, f"{path}{key}.")
    return bad


def _validate(rec: dict) -> BaseModel:
    assert _unknown_keys(DetectionFinding, rec) == []
    model = DetectionFinding.model_validate(rec)
    # OCSF requires these for a Detection Finding; pydantic-ocsf does not insist on them.
    for key in ("activity_id", "type_uid", "time", "severity_id", "finding_info", "metadata"):
        assert key in rec
    assert rec["type_uid"] == rec["class_uid"] * 100 + rec["activity_id"]
    assert (rec["class_uid"], rec["category_uid"]) == (2004, 2)
    return model


def test_create_update_close_are_valid_detection_findings() -> None:
    a1, a2, a3 = _alert(1, 1000.0), _alert(2, 1060.0), _alert(3, 990.0)
    created, state = ocsf.create_finding(a1)
    updated = ocsf.update_finding(state, a2)
    updated2 = ocsf.update_finding(state, a3)  # late event: the range grows backwards too
    verdict = Feedback(
        target_id=state.uid,
        verdict=Verdict.true_positive,
        reason=VerdictReason.suspicious_activity,
        analyst="alice",
        comment="mimikatz via Empire",
        time=2000.0,
        source_ref="SENT-42",
    )
    closed = ocsf.close_finding(state, verdict)
    for rec in (created, updated, updated2, closed):
        _validate(rec)
    assert [r["activity_id"] for r in (created, updated, closed)] == [1, 2, 3]
    assert [r["type_uid"] for r in (created, updated, closed)] == [200401, 200402, 200403]
    assert {r["finding_info"]["uid"] for r in (created, updated, updated2, closed)} == {"g" * 24}
    assert [r["count"] for r in (created, updated, updated2, closed)] == [1, 2, 3, 3]
    assert (created["start_time"], created["end_time"]) == (1_000_000, 1_000_000)
    assert (updated2["start_time"], updated2["end_time"]) == (990_000, 1_060_000)
    assert created["time"] == 1_002_500 and closed["time"] == 2_000_000  # ms
    assert closed["status_id"] == 4 and closed["comment"] == "mimikatz via Empire"
    assert closed["evidences"][0]["verdict_id"] == 2  # OCSF True Positive
    assert closed["unmapped"]["outrider"]["verdict"]["source_ref"] == "SENT-42"
    assert len({r["metadata"]["uid"] for r in (created, updated, updated2, closed)}) == 4


def test_required_fields_and_model_are_filled() -> None:
    rec, _ = ocsf.create_finding(_alert(1, 1000.0, severity=Severity.critical))
    model = _validate(rec)
    assert rec["severity_id"] == 5 and rec["risk_level_id"] == 4
    assert rec["risk_score"] == 100  # round(99.6)
    meta = rec["metadata"]
    assert meta["version"] == ocsf.OCSF_VERSION and meta["product"]["name"] == "Outrider"
    assert meta["product"]["version"]
    analytic = rec["finding_info"]["analytic"]
    assert (analytic["type_id"], analytic["name"], analytic["version"]) == (4, "ape", "v3")
    assert model.finding_info.analytic.type_id == 4
    assert "powershell.exe" in rec["finding_info"]["title"]
    assert "0x1010 seen 0 times" in rec["finding_info"]["desc"]
    assert rec["confidence_score"] == 0  # every alert now carries one (default 0: unknown)


def test_entities_become_observables_evidences_and_anomalies() -> None:
    rec, _ = ocsf.create_finding(_alert(1, 1000.0))
    types_ = {o["value"]: o["type_id"] for o in rec["observables"]}
    assert types_["10.4.17.101"] == 2 and types_["4444"] == 11 and types_["IT001.shire.com"] == 1
    assert types_["0x1010"] == 99
    ev = rec["evidences"][0]
    assert ev["src_endpoint"] == {"ip": "10.4.17.101"}
    assert ev["dst_endpoint"] == {"port": 4444}
    assert ev["device"]["hostname"] == "IT001.shire.com"
    anomalies = rec["anomaly_analyses"][0]["anomalies"]
    assert anomalies[0]["observation_parameter"] == "source_process+target_process"
    assert {a["observed_pattern"] for a in anomalies[1:]} == {"UNSEEN", "RARE"}
    assert rec["unmapped"]["outrider"]["explanation"][0]["contribution"] == 0.61


@pytest.mark.parametrize(("severity", "sev_id"), [("low", 2), ("medium", 3), ("high", 4)])
def test_severity_mapping(severity: str, sev_id: int) -> None:
    rec, _ = ocsf.create_finding(_alert(1, 1000.0, severity=Severity(severity)))
    assert _validate(rec).severity_id == sev_id


def test_confidence_score_when_the_alert_carries_one() -> None:
    alert = {**_alert(1, 1000.0), "confidence_score": 23.4}  # as service/confidence.py sets it
    rec, _ = ocsf.create_finding(alert)
    _validate(rec)
    assert (rec["confidence_score"], rec["confidence_id"]) == (23, 1)


def test_finding_book_creates_updates_and_closes_by_alert_or_group_id() -> None:
    book = ocsf.FindingBook(max_open=2)
    first = book.on_alert(_alert(1, 1000.0))
    second = book.on_alert(_alert(2, 1001.0))
    assert (first["activity_id"], second["activity_id"], second["count"]) == (1, 2, 2)
    fb = Feedback(
        target_id=second["unmapped"]["outrider"]["alert_id"],
        verdict=Verdict.false_positive,
        analyst="bob",
        time=1500.0,
    )
    closed = book.on_verdict(fb)
    assert closed is not None and _validate(closed).activity_id == 3
    assert closed["evidences"][0]["verdict_id"] == 1
    assert book.on_verdict(fb) is None  # already closed


def test_a_batch_gives_one_record_per_group_counting_every_alert() -> None:
    book = ocsf.FindingBook()
    other = {**_alert(9, 1005.0), "group_id": "h" * 24}
    first = book.on_alerts([_alert(1, 1002.0), other, _alert(2, 1000.0), _alert(3, 1001.0)])
    assert [r["finding_info"]["uid"] for r in first] == ["g" * 24, "h" * 24]
    created, lone = first
    assert (created["activity_id"], created["count"], lone["count"]) == (1, 3, 1)
    assert (created["start_time"], created["end_time"]) == (1_000_000, 1_002_000)
    assert created["unmapped"]["outrider"]["alert_id"] == _alert(3, 0)["alert_id"], "newest"
    assert [e["uid"] for e in created["evidences"]] == [_alert(i, 0)["alert_id"] for i in (1, 2, 3)]
    many = [_alert(10 + i, 1010.0 + i) for i in range(ocsf.MAX_EVIDENCES + 4)]
    (updated,) = book.on_alerts(many)
    assert (updated["activity_id"], updated["count"]) == (2, 3 + len(many))
    assert len(updated["evidences"]) == ocsf.MAX_EVIDENCES
    assert updated["evidences"][-1]["uid"] == many[-1]["alert_id"]
    for rec in (*first, updated):
        _validate(rec)
    fb = Feedback(
        target_id=many[0]["alert_id"], verdict=Verdict.false_positive, analyst="a", time=2e3
    )
    closed = book.on_verdict(fb)  # any alert of the batch names its finding
    assert closed is not None and closed["count"] == 3 + len(many)


def test_the_checker_catches_misspelt_fields() -> None:
    rec, _ = ocsf.create_finding(_alert(1, 1000.0))
    rec["finding_info"]["analytics"] = rec["finding_info"].pop("analytic")
    assert _unknown_keys(DetectionFinding, rec) == ["finding_info.analytics"]
    rec, _ = ocsf.create_finding(_alert(1, 1000.0))
    with pytest.raises(ValueError, match="type_uid"):
        DetectionFinding.model_validate({**rec, "type_uid": 200402})


def test_title_and_description_name_only_pairs_that_carry_blame() -> None:
    """A counting model lists pairs seen as often as chance too (share 0, with how often they
    were seen together): the finding must not present those as the reason."""
    alert = _alert(7, 1_700_000_000.0)
    unblamed = {"type_a": "host", "value_a": "IT001.shire.com", "type_b": "src_ip",
                "value_b": "10.4.17.101", "contribution": 0.0, "seen_together": 812.0}  # fmt: skip
    alert["explanation"] = [dict(alert["explanation"][0], seen_together=0.0), unblamed]
    text = ocsf.describe(alert)
    assert "powershell.exe with target_process=lsass.exe: never seen together" in text
    assert "src_ip=10.4.17.101" not in text.split("Rarity:")[0]
    assert ocsf.title(alert).endswith("source_process=powershell.exe with target_process=lsass.exe")
    (analysis,) = ocsf._anomaly_analyses(alert)
    pairs = [a["observation_parameter"] for a in analysis["anomalies"]]
    assert "source_process+target_process" in pairs and "host+src_ip" not in pairs
    alert["explanation"] = [unblamed]
    assert ocsf.title(alert) == "Unusual process_access: new granted_access=0x1010"
    assert "Most unusual together" not in ocsf.describe(alert)


def test_a_stream_alert_leads_with_its_finding() -> None:
    alert = _alert(7, 1_700_000_000.0)
    note = "share's steady beacon stream stopped 14 s before this"
    alert["attributes"] = {**alert.get("attributes", {}), "stream_context": {
        "reason": "silence", "source": "beacon", "host": "share", "at": 1.0, "lift": 2.2,
        "note": note}}  # fmt: skip
    assert ocsf.title(alert) == f"Unusual process_access: {note}"
    assert ocsf.describe(alert).startswith(f"Stream finding: {note}.")
    rec, _ = ocsf.create_finding(alert)
    assert rec["finding_info"]["title"] == ocsf.title(alert)
