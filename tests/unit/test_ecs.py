"""The ECS view: field names and types checked against ECS 8.17 definitions.

No maintained PyPI package ships the ECS field definitions (ecs-logging formats log records,
it carries no field table), so the fields the view may write are listed here with their ECS
8.17 types, as in elastic/ecs `generated/csv/fields.csv` (tag v8.17.0). Custom data lives under
`outrider.*` and `labels.*` (ECS `labels`: an object of keyword values).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

import pytest

from schemas import Alert, EntityInfo, ModelRef, Origin, PairExplanation, Severity
from service import ecs

#: ECS 8.17 field -> (type, array allowed).
ECS_8_17: dict[str, tuple[str, bool]] = {
    "@timestamp": ("date", False),
    "message": ("match_only_text", False),
    "ecs.version": ("keyword", False),
    "event.kind": ("keyword", False),
    "event.category": ("keyword", True),
    "event.type": ("keyword", True),
    "event.id": ("keyword", False),
    "event.created": ("date", False),
    "event.module": ("keyword", False),
    "event.dataset": ("keyword", False),
    "event.provider": ("keyword", False),
    "event.severity": ("long", False),
    "event.risk_score": ("float", False),
    "event.risk_score_norm": ("float", False),
    "event.reason": ("keyword", False),
    "rule.id": ("keyword", False),
    "rule.name": ("keyword", False),
    "rule.version": ("keyword", False),
    "rule.ruleset": ("keyword", False),
    "rule.category": ("keyword", False),
    "rule.description": ("keyword", False),
    "rule.author": ("keyword", True),
    "observer.vendor": ("keyword", False),
    "observer.product": ("keyword", False),
    "observer.type": ("keyword", False),
    "host.name": ("keyword", False),
    "user.name": ("keyword", False),
    "user.target.name": ("keyword", False),
    "source.ip": ("ip", False),
    "source.address": ("keyword", False),
    "destination.ip": ("ip", False),
    "destination.address": ("keyword", False),
    "destination.port": ("long", False),
    "network.transport": ("keyword", False),
    "network.protocol": ("keyword", False),
    "process.executable": ("keyword", False),
    "process.name": ("keyword", False),
    "process.parent.executable": ("keyword", False),
    "process.parent.name": ("keyword", False),
    "dns.question.name": ("keyword", False),
    "dns.question.type": ("keyword", False),
    "dns.response_code": ("keyword", False),
    "http.request.method": ("keyword", False),
    "http.response.status_code": ("long", False),
    "user_agent.original": ("keyword", False),
    "tls.client.server_name": ("keyword", False),
    "tls.client.ja3": ("keyword", False),
    "file.path": ("keyword", False),
    "registry.path": ("keyword", False),
    "dll.path": ("keyword", False),
    "related.ip": ("ip", True),
    "related.user": ("keyword", True),
    "related.hosts": ("keyword", True),
}
CUSTOM = ("outrider.", "labels.")


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, dict) and not (prefix + k).startswith(CUSTOM):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _type_ok(ecs_type: str, value: Any) -> bool:
    if ecs_type in ("keyword", "match_only_text"):
        return isinstance(value, str)
    if ecs_type == "long":
        return isinstance(value, int) and not isinstance(value, bool)
    if ecs_type == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if ecs_type == "date":
        return isinstance(value, str) and datetime.fromisoformat(value.replace("Z", "+00:00"))
    if ecs_type == "ip":
        return isinstance(value, str) and bool(ipaddress.ip_address(value))
    raise AssertionError(ecs_type)


def _check(doc: dict[str, Any]) -> dict[str, Any]:
    flat = _flatten(doc)
    for path, value in flat.items():
        assert not path.startswith("kibana"), path
        if path.startswith(CUSTOM):
            if path.startswith("labels."):
                assert isinstance(value, str), path
            continue
        assert path in ECS_8_17, f"{path} is not an ECS 8.17 field this view may write"
        ecs_type, array = ECS_8_17[path]
        values = value if array and isinstance(value, list) else [value]
        assert all(_type_ok(ecs_type, v) for v in values), (path, value)
    return flat


def _alert(severity: Severity = Severity.high, **entities: str) -> dict:
    return Alert(
        alert_id="a" * 32,
        group_id="b" * 24,
        kind="process_network",
        event_time=1714557600.25,
        detected_at=1714557601.0,
        score=5.0,
        percentile=98.5,
        severity=severity,
        model=ModelRef(name="ape", version="v7"),
        entities=entities
        or {
            "user": "SHIRE\\pgustavo",
            "host": "IT001",
            "process": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
            "dst_ip": "85.239.53.219",
            "dst_port": "443",
            "protocol": "tcp",
            "src_ip": "10.4.17.101",
        },
        explanation=[
            PairExplanation(
                type_a="process",
                value_a="powershell.exe",
                type_b="dst_ip",
                value_b="85.239.53.219",
                contribution=0.7,
            )
        ],
        rarity=[EntityInfo(type="dst_ip", value="85.239.53.219", count=0.0, frequency=0.0)],
        origin=Origin(topic="sysmon", partition=1, offset=9),
    ).model_dump(mode="json")


def test_alert_document_is_ecs_and_promotable_by_external_alerts_rule() -> None:
    doc = ecs.to_ecs(_alert())
    flat = _check(doc)
    assert flat["event.kind"] == "alert"
    assert flat["event.module"] not in {"endgame", "endpoint", "cloud_defend"}
    assert flat["event.severity"] == 73 and flat["event.risk_score"] == 98.5
    assert flat["ecs.version"] == ecs.ECS_VERSION == "8.17.0"
    assert flat["@timestamp"] == "2024-05-01T10:00:00.250Z"
    assert flat["message"].startswith("Unusual process_network: process=powershell.exe")
    assert (flat["rule.id"], flat["rule.version"]) == ("ape", "v7")
    assert flat["host.name"] == "IT001" and flat["user.name"] == "SHIRE\\pgustavo"
    assert (flat["source.ip"], flat["destination.ip"]) == ("10.4.17.101", "85.239.53.219")
    assert flat["destination.port"] == 443
    assert flat["process.name"] == "powershell.exe"
    assert flat["related.ip"] == ["10.4.17.101", "85.239.53.219"]
    assert flat["related.user"] == ["SHIRE\\pgustavo"] and flat["related.hosts"] == ["IT001"]
    assert doc["labels"]["outrider_group_id"] == "b" * 24
    assert doc["outrider"]["explanation"][0]["contribution"] == 0.7


@pytest.mark.parametrize(
    ("severity", "value"), [("low", 21), ("medium", 47), ("high", 73), ("critical", 99)]
)
def test_event_severity_follows_elastic_mapping(severity: str, value: int) -> None:
    assert ecs.to_ecs(_alert(Severity(severity)))["event"]["severity"] == value


def test_values_that_do_not_fit_an_ecs_type_go_elsewhere_or_nowhere() -> None:
    doc = ecs.to_ecs(_alert(src_ip="ws-17.corp", dst_ip="<rare>", dst_port="dynamic", rcode="3"))
    flat = _check(doc)
    assert flat["source.address"] == "ws-17.corp" and "source.ip" not in flat
    assert flat["destination.address"] == "<rare>"
    assert "destination.port" not in flat and "related.ip" not in flat
    assert flat["dns.response_code"] == "3"


def test_entity_field_map_is_configurable_and_every_default_is_ecs() -> None:
    for path in ecs.ENTITY_FIELDS.values():
        assert path in ECS_8_17
    doc = ecs.to_ecs(_alert(hostname="db-1"), {"hostname": "host.name"})
    assert _check(doc)["host.name"] == "db-1"
