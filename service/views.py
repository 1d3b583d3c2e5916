"""What an alert looks like on each output topic, with Kafka conventions SIEMs expect.

- the native alert (schemas.Alert) on the alerts topic;
- an OCSF Detection Finding per group (create on the first alert, then one update per batch
  with alerts of the group) on the findings topic, keyed by finding uid so a sink can upsert
  idempotently;
- an ECS document for Elastic users on the ECS topic.
Every record carries CloudEvents binary-mode headers (ce_id, ce_source, ce_type,
ce_specversion, ce_time, ce_dataschema, content-type) and, when the input record carried W3C
trace context, `ce_traceparent`, so one trace follows an event from source to finding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas import Feedback
from service.ecs import to_ecs
from service.ocsf import FindingBook

CE_SPECVERSION = b"1.0"
SCHEMA_BASE = "https://outrider.dev/schemas"  # the JSON Schemas are schemas/json/*.json

Header = tuple[str, bytes]
Output = tuple[str, bytes, bytes, list[Header]]  # topic, key, value, headers


def _origin(alert: Mapping[str, Any]) -> tuple[str, int, int]:
    o = alert["origin"]
    return (o["topic"], o["partition"], o["offset"])


def traceparent(headers: Sequence[tuple[str, bytes]] | None) -> bytes | None:
    """W3C trace context of an input record (plain or CloudEvents-prefixed header)."""
    for key, value in headers or ():
        if key in ("traceparent", "ce_traceparent") and value:
            return value if isinstance(value, bytes) else str(value).encode()
    return None


def cloudevent_headers(
    ce_id: str,
    ce_type: str,
    source: str,
    schema: str,
    trace: bytes | None,
    at: bytes | None = None,
) -> list[Header]:
    """CloudEvents' Kafka binding headers; `at`: ce_time, ISO 8601 (default now)."""
    return _with_id(ce_id, trace, _shared_headers(ce_type, source, schema, at))


def _shared_headers(ce_type: str, source: str, schema: str, at: bytes | None) -> list[Header]:
    """The headers after ce_id: alike for every record of one type in a batch."""
    return [
        ("ce_source", source.encode()),
        ("ce_type", ce_type.encode()),
        ("ce_time", at or datetime.now(UTC).isoformat().encode()),
        ("ce_dataschema", f"{SCHEMA_BASE}/{schema}".encode()),
        ("content-type", b"application/json"),
    ]


def _with_id(ce_id: str, trace: bytes | None, shared: list[Header]) -> list[Header]:
    headers = [("ce_specversion", CE_SPECVERSION), ("ce_id", ce_id.encode()), *shared]
    if trace is not None:
        headers.append(("ce_traceparent", trace))
    return headers


class AlertViews:
    """Renders one alert onto every configured output topic."""

    def __init__(
        self,
        alerts_topic: str,
        findings_topic: str,
        ecs_topic: str,
        source: str,
        findings_state: dict[str, Any] | None = None,
    ) -> None:
        self.alerts_topic = alerts_topic
        self.findings_topic = findings_topic
        self.ecs_topic = ecs_topic
        self.source = source
        self.findings: FindingBook | None = None
        if findings_topic:  # open findings come back from the checkpoint after a restart
            self.findings = (
                FindingBook.from_state(findings_state) if findings_state else FindingBook()
            )

    def render(
        self, alerts: list[dict[str, Any]], traces: Mapping[tuple[str, int, int], bytes]
    ) -> Iterator[Output]:
        """A batch's alerts: each on the alerts (and ECS) topic, and one OCSF finding record
        per group they fall in. `traces`: W3C trace context by the origin (topic, partition,
        offset) of the input records that carried one."""
        at = datetime.now(UTC).isoformat().encode()  # one time for the batch's records
        # every alert's CloudEvents headers but its ce_id (and trace), built once a batch
        shared = _shared_headers("dev.outrider.alert.v1", self.source, "alert.schema.json", at)
        for alert in alerts:
            key = alert["group_id"].encode()
            aid = alert["alert_id"]
            trace = traces.get(_origin(alert)) if traces else None
            yield self.alerts_topic, key, orjson.dumps(alert), _with_id(aid, trace, shared)
            if self.ecs_topic:
                yield (
                    self.ecs_topic, key, orjson.dumps(to_ecs(alert)),
                    cloudevent_headers(aid, "dev.outrider.alert.ecs.v1", self.source,
                                       "ecs/8.17", trace, at),
                )  # fmt: skip
        if self.findings is None or not alerts:
            return
        for finding in self.findings.on_alerts(alerts):
            uid, newest = finding["finding_info"]["uid"], finding["unmapped"]["outrider"]
            yield (
                self.findings_topic, uid.encode(), orjson.dumps(finding),
                cloudevent_headers(f"{uid}:{newest['alert_id']}", "dev.outrider.finding.ocsf.v1",
                                   self.source, "ocsf/1.x/detection_finding",
                                   traces.get(_origin(newest)), at),
            )  # fmt: skip

    def close(self, feedback: Feedback) -> Iterator[Output]:
        """An analyst's verdict closes the group's OCSF finding (activity 3)."""
        if self.findings is None:
            return
        finding = self.findings.on_verdict(feedback)
        if finding is not None:
            uid = finding["finding_info"]["uid"]
            yield (
                self.findings_topic, uid.encode(), orjson.dumps(finding),
                cloudevent_headers(f"{uid}:close", "dev.outrider.finding.ocsf.v1",
                                   self.source, "ocsf/1.x/detection_finding", None),
            )  # fmt: skip
