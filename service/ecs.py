"""The ECS view of an alert (Elastic Common Schema 8.17), for outputs read by Elastic users.

The document is what Elastic Security's prebuilt "External Alerts" rule promotes: it takes
`event.kind: alert` documents (from any `event.module` but endgame/endpoint/cloud_defend),
names the alert from `message`, maps `event.severity` 21/47/73/99 to low/medium/high/critical
and takes `event.risk_score` as the risk score. It never writes `kibana.alert.*`: those fields
belong to Elastic's detection engine, and a document carrying them confuses it.

Entities land on ECS fields by entity type (`ENTITY_FIELDS`, overridable per output): an
address only on an `ip` field when it parses as one, a port only as a number. The explanation
and everything else ECS has no field for goes under the custom `outrider.*` object, and the
group id under `labels.outrider_group_id` (a verdict coming back from Elastic carries it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from service.ocsf import describe, is_ip, title

ECS_VERSION = "8.17.0"

#: Outrider severity -> ECS event.severity, the values Elastic's severity mapping expects.
EVENT_SEVERITY = {"low": 21, "medium": 47, "high": 73, "critical": 99}

#: Entity type -> ECS field. A deployment with other entity names passes its own map.
ENTITY_FIELDS: dict[str, str] = {
    "host": "host.name",
    "dst_host": "host.name",
    "agent": "host.name",
    "user": "user.name",
    "src_user": "user.name",
    "dst_user": "user.target.name",
    "ip": "source.ip",
    "src_ip": "source.ip",
    "orig_h": "source.ip",
    "src_host": "source.address",
    "dst_ip": "destination.ip",
    "resp_h": "destination.ip",
    "dst_port": "destination.port",
    "resp_p": "destination.port",
    "proto": "network.transport",
    "protocol": "network.transport",
    "app_proto": "network.protocol",
    "service": "network.protocol",
    "process": "process.executable",
    "source_process": "process.executable",
    "parent_process": "process.parent.executable",
    "query": "dns.question.name",
    "qtype": "dns.question.type",
    "rcode": "dns.response_code",
    "method": "http.request.method",
    "status": "http.response.status_code",
    "user_agent": "user_agent.original",
    "sni": "tls.client.server_name",
    "ja3": "tls.client.ja3",
    "target_file": "file.path",
    "target_object": "registry.path",
    "image_loaded": "dll.path",
}

#: ECS fields of type `ip` and `long`: values are checked before they are written there.
IP_FIELDS = {"source.ip", "destination.ip", "host.ip", "client.ip", "server.ip"}
LONG_FIELDS = {"destination.port", "source.port", "http.response.status_code"}
#: Where an address that is not an IP goes instead.
NAME_FOR_IP = {"source.ip": "source.address", "destination.ip": "destination.address"}
#: Fields whose values also belong in related.* (ECS: for pivoting across events).
RELATED = {
    "user.name": "user",
    "user.target.name": "user",
    "host.name": "hosts",
    "source.address": "hosts",
    "destination.address": "hosts",
    "dns.question.name": "hosts",
    "tls.client.server_name": "hosts",
}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    node = doc
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node.setdefault(leaf, value)  # the first entity to claim a field keeps it


def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def to_ecs(
    alert: Mapping[str, Any], entity_fields: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ECS document (nested JSON) for one alert as it is on the wire."""
    fields = ENTITY_FIELDS if entity_fields is None else entity_fields
    severity = str(alert["severity"])
    model = alert["model"]
    kind = str(alert["kind"])
    desc = describe(alert)
    doc: dict[str, Any] = {
        "@timestamp": _iso(float(alert["event_time"])),
        "ecs": {"version": ECS_VERSION},
        "message": title(alert),
        "event": {
            "kind": "alert",
            "category": ["intrusion_detection"],
            "type": ["info"],
            "id": str(alert["alert_id"]),
            "created": _iso(float(alert["detected_at"])),
            "module": "outrider",
            "dataset": f"outrider.{kind}",
            "provider": "outrider",
            "severity": EVENT_SEVERITY[severity],
            "risk_score": float(alert["percentile"]),
            "risk_score_norm": float(alert["percentile"]),
            "reason": desc,
        },
        "rule": {
            "id": str(model["name"]),
            "name": f"Outrider {model['name']}: unusual {kind}",
            "version": str(model["version"]),
            "ruleset": "outrider",
            "category": "Anomaly detection",
            "description": desc,
            "author": ["Outrider"],
        },
        "observer": {"vendor": "Outrider", "product": "Outrider", "type": "anomaly-detector"},
        "labels": {
            "outrider_group_id": str(alert["group_id"]),
            "outrider_kind": kind,
            "outrider_severity": severity,
        },
    }
    related: dict[str, list[str]] = {}
    for etype, raw in alert["entities"].items():
        value = str(raw)
        path = fields.get(etype)
        if path is None or value == "":
            continue
        if path in IP_FIELDS and not is_ip(value):
            path = NAME_FOR_IP.get(path, "")
            if not path:
                continue
        if path in LONG_FIELDS:
            if not value.isdigit():
                continue
            _put(doc, path, int(value))
            continue
        _put(doc, path, value)
        if path.endswith(".executable"):
            _put(doc, path[: -len("executable")] + "name", _basename(value))
        if path in IP_FIELDS:
            related.setdefault("ip", []).append(value)
        elif path in RELATED:
            related.setdefault(RELATED[path], []).append(value)
    if related:
        doc["related"] = {k: sorted(set(v)) for k, v in sorted(related.items())}
    doc["outrider"] = {
        "alert_id": alert["alert_id"],
        "group_id": alert["group_id"],
        "kind": kind,
        "score": alert["score"],
        "percentile": alert["percentile"],
        "model": dict(model),
        "entities": dict(alert["entities"]),
        "explanation": list(alert.get("explanation") or []),
        "rarity": list(alert.get("rarity") or []),
        "origin": dict(alert.get("origin") or {}),
    }
    for key in ("confidence", "confidence_score"):
        if key in alert:
            doc["outrider"][key] = alert[key]
    return doc
